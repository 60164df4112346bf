/* emit's compiled core (logger.py holds the reference and the fallback of each part):
 * - fast_attributes() (reference: logger.python_fast_attributes): the checks that send a call to the AuditEvent path,
 *   the new record id and the attribute dict in event_to_attributes' order, without the ~40 bytecode-level steps per
 *   call the reference takes. Everything it compares with (the attribute keys, the outcomes, the known actions, the
 *   Actor and Resource classes, the limits, the id maker) comes from logger.py through configure_fast_attributes, so
 *   the conventions stay in one place.
 * - emit() (reference: logger.python_emit): AuditLogger.emit's body, from the audit context's defaults to the
 *   direct path's first stage, with the steps of AuditLogger._emit_record; every case that path does not finish goes
 *   back to logger.py's Python (the AuditEvent path, a logger to bind anew, the SDK's path). What it reads (the
 *   context variables, the binding, the event name cache) comes from logger.py through configure_emit.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stddef.h>
#include <structmember.h>
#include <time.h>

enum {
    KEY_ACTION, KEY_OUTCOME, KEY_UID, KEY_RESOURCE_TYPE, KEY_RESOURCE_ID, KEY_RESOURCE_NAME, KEY_TENANT,
    KEY_CLIENT_ADDRESS, KEY_USER_AGENT, KEY_SESSION_ID, KEY_REQUEST_ID, KEY_HTTP_METHOD, KEY_HTTP_ROUTE, KEY_URL_PATH,
    KEY_ERROR_TYPE, KEY_REASON, KEY_STATUS_CODE, KEY_CHANGES, KEY_METADATA, KEY_ACTOR_TYPE, KEY_USER_ID, KEY_USER_EMAIL,
    KEY_USER_NAME, KEY_USER_ROLES, KEY_IMPERSONATOR, KEY_COUNT
};

/* The plain strings of an event, in the order their attributes are added (keys KEY_TENANT..KEY_ERROR_TYPE). */
#define PLAIN_STRINGS 9

static PyObject *keys[KEY_COUNT];
static PyObject *outcomes, *outcome_class, *known_actions, *actor_class, *resource_class, *change_class, *make_uid;
static PyObject *string_actor_type; /* audit.actor.type of an actor given by its id, as Actor(id=...) has it */
static Py_ssize_t max_id_len, max_type_len, max_reason_len;
static int max_depth;
static PyObject *name_type, *name_id, *name_name, *name_email, *name_roles, *name_impersonator_id, *name_value_;
static PyObject *name_old, *name_new;

static int is_str_within(PyObject *value, Py_ssize_t most) {
    return PyUnicode_CheckExact(value) && PyUnicode_GET_LENGTH(value) <= most;
}

static int none_or_str_within(PyObject *value, Py_ssize_t most) {
    return value == Py_None || is_str_within(value, most);
}

/* A plain scalar AnyValue: exact str, bool, None, an int that fits in 64 bits or a finite float. */
static int plain_scalar(PyObject *value) {
    if (PyUnicode_CheckExact(value) || PyBool_Check(value) || value == Py_None) {
        return 1;
    }
    if (PyLong_CheckExact(value)) {
        int overflow = 0;
        PyLong_AsLongLongAndOverflow(value, &overflow);
        return overflow == 0;
    }
    return PyFloat_CheckExact(value) && isfinite(PyFloat_AS_DOUBLE(value));
}

/* model.is_flat_and_plain: string keys and plain scalar values. */
static int flat_and_plain(PyObject *mapping) {
    Py_ssize_t position = 0;
    PyObject *key, *item;
    while (PyDict_Next(mapping, &position, &key, &item)) {
        if (!PyUnicode_CheckExact(key) || !plain_scalar(item)) {
            return 0;
        }
    }
    return 1;
}

/* model.is_plain_any_value and to_any_value's copy in one walk: a new reference to the copy (dicts copied, lists and
 * tuples as lists, scalars themselves), or NULL: with an exception when the copy fails, without one when `value` is
 * not plain (the AuditEvent path then converts it or names what is wrong). No Python code runs during the walk. */
static PyObject *plain_copy(PyObject *value, int depth);

/* A copy of an exact dict whose keys are exact strings at least `shortest_key` long, each value copied by
 * `copy_value(value, depth)`; NULL as plain_copy answers (also for any other key). */
static PyObject *copy_entries(PyObject *mapping, Py_ssize_t shortest_key, PyObject *(*copy_value)(PyObject *, int),
                              int depth) {
    PyObject *copy = _PyDict_NewPresized(PyDict_GET_SIZE(mapping));
    Py_ssize_t position = 0;
    PyObject *key, *item;
    while (copy != NULL && PyDict_Next(mapping, &position, &key, &item)) {
        PyObject *item_copy =
            PyUnicode_CheckExact(key) && PyUnicode_GET_LENGTH(key) >= shortest_key ? copy_value(item, depth) : NULL;
        if (item_copy == NULL || PyDict_SetItem(copy, key, item_copy) < 0) {
            Py_XDECREF(item_copy);
            Py_CLEAR(copy);
            break;
        }
        Py_DECREF(item_copy);
    }
    return copy;
}

static PyObject *plain_copy(PyObject *value, int depth) {
    if (plain_scalar(value)) {
        return Py_NewRef(value);
    }
    if (depth >= max_depth) {
        return NULL;
    }
    if (PyDict_CheckExact(value)) {
        return copy_entries(value, 0, plain_copy, depth + 1);
    }
    if (PyList_CheckExact(value) || PyTuple_CheckExact(value)) {
        Py_ssize_t count = PySequence_Fast_GET_SIZE(value);
        PyObject *copy = PyList_New(count);
        for (Py_ssize_t index = 0; copy != NULL && index < count; index++) {
            PyObject *item_copy = plain_copy(PySequence_Fast_GET_ITEM(value, index), depth + 1);
            if (item_copy == NULL) {
                Py_CLEAR(copy);
                break;
            }
            PyList_SET_ITEM(copy, index, item_copy);
        }
        return copy;
    }
    return NULL;
}

/* {"old": old, "new": new} of one change in a form the fast path takes (model.plain_change: an exact Change, an exact
 * dict with no keys but "old" and "new", an exact (old, new) tuple or list), its values copied by plain_copy from
 * `depth`; NULL as plain_copy answers. */
static PyObject *change_entry(PyObject *change, int depth) {
    PyObject *old = NULL, *new = NULL, *entry = NULL;
    if (Py_IS_TYPE(change, (PyTypeObject *)change_class)) {
        if ((old = PyObject_GetAttr(change, name_old)) == NULL || (new = PyObject_GetAttr(change, name_new)) == NULL) {
            goto done;
        }
    } else if (PyDict_CheckExact(change)) {
        PyObject *found[2] = {Py_None, Py_None}; /* old, new: None when absent */
        Py_ssize_t position = 0;
        PyObject *key, *item;
        while (PyDict_Next(change, &position, &key, &item)) {
            if (!PyUnicode_CheckExact(key)) {
                return NULL;
            }
            if (PyUnicode_Compare(key, name_old) == 0) {
                found[0] = item;
            } else if (PyUnicode_Compare(key, name_new) == 0) {
                found[1] = item;
            } else {
                return NULL;
            }
        }
        old = Py_NewRef(found[0]);
        new = Py_NewRef(found[1]);
    } else if ((PyTuple_CheckExact(change) || PyList_CheckExact(change)) && PySequence_Fast_GET_SIZE(change) == 2) {
        old = Py_NewRef(PySequence_Fast_GET_ITEM(change, 0));
        new = Py_NewRef(PySequence_Fast_GET_ITEM(change, 1));
    } else {
        return NULL;
    }
    Py_SETREF(old, plain_copy(old, depth));
    if (old == NULL) {
        goto done;
    }
    Py_SETREF(new, plain_copy(new, depth));
    if (new == NULL) {
        goto done;
    }
    entry = _PyDict_NewPresized(2);
    if (entry != NULL && (PyDict_SetItem(entry, name_old, old) < 0 || PyDict_SetItem(entry, name_new, new) < 0)) {
        Py_CLEAR(entry);
    }
done:
    Py_XDECREF(old);
    Py_XDECREF(new);
    return entry;
}

/* audit.changes of plain changes (logger.plain_changes: an exact dict of non-empty exact-string names to changes
 * change_entry takes), as event_to_attributes writes it; NULL as plain_copy answers. */
static PyObject *plain_changes(PyObject *changes) {
    return PyDict_CheckExact(changes) ? copy_entries(changes, 1, change_entry, 0) : NULL;
}

/* The Outcome members among `outcomes`' keys and their fields, found by identity (configure_fast_attributes). */
#define MAX_MEMBERS 16
static PyObject *members[MAX_MEMBERS], *member_fields[MAX_MEMBERS];
static int member_count;

/* The outcome's (value, severity number, severity text), borrowed; NULL without an error when it is not one. */
static PyObject *outcome_fields(PyObject *outcome) {
    for (int index = 0; index < member_count; index++) {
        if (outcome == members[index]) {
            return member_fields[index];
        }
    }
    PyObject *found = NULL;
    if (Py_IS_TYPE(outcome, (PyTypeObject *)outcome_class)) {
        PyObject *value = PyObject_GetAttr(outcome, name_value_); /* a member's hash is a Python-level call */
        if (value == NULL) {
            return NULL;
        }
        found = PyDict_GetItemWithError(outcomes, value);
        Py_DECREF(value);
    } else if (PyUnicode_CheckExact(outcome)) {
        found = PyDict_GetItemWithError(outcomes, outcome);
    }
    return found;
}

static int put(PyObject *attributes, int key, PyObject *value) {
    return value == Py_None ? 0 : PyDict_SetItem(attributes, keys[key], value);
}

/* put for a new reference, which it consumes (NULL: the exception of the call that made it). */
static int put_new(PyObject *attributes, int key, PyObject *value) {
    if (value == NULL) {
        return -1;
    }
    int status = PyDict_SetItem(attributes, keys[key], value);
    Py_DECREF(value);
    return status;
}

/* The fields of an Actor add_actor reads, and where an exact Actor (a dataclass with slots) holds each: the offset
 * of its slot, as the slot's member descriptor reads it, or -1 to read it by name. Set by configure_fast_attributes. */
enum { ACTOR_ID, ACTOR_TYPE, ACTOR_EMAIL, ACTOR_NAME, ACTOR_ROLES, ACTOR_IMPERSONATOR, ACTOR_FIELDS };
static PyObject **actor_names[ACTOR_FIELDS] = {&name_id, &name_type, &name_email, &name_name, &name_roles,
                                                &name_impersonator_id};
static Py_ssize_t actor_offsets[ACTOR_FIELDS] = {-1, -1, -1, -1, -1, -1};

/* One field of an exact Actor (a new reference); an empty slot is read by name, which raises its AttributeError. */
static PyObject *actor_field(PyObject *actor, int field) {
    if (actor_offsets[field] >= 0) {
        PyObject *value = *(PyObject **)((char *)actor + actor_offsets[field]);
        if (value != NULL) {
            return Py_NewRef(value);
        }
    }
    return PyObject_GetAttr(actor, *actor_names[field]);
}

/* Find the slot of each Actor field in `actor_class` (see actor_offsets); 0, or -1 with an exception. */
static int find_actor_slots(PyObject *actor_class) {
    PyObject *namespace = ((PyTypeObject *)actor_class)->tp_dict;
    for (int field = 0; field < ACTOR_FIELDS; field++) {
        PyObject *descriptor = namespace == NULL ? NULL : PyDict_GetItemWithError(namespace, *actor_names[field]);
        if (descriptor == NULL && PyErr_Occurred()) {
            return -1;
        }
        actor_offsets[field] = -1;
        if (descriptor != NULL && Py_IS_TYPE(descriptor, &PyMemberDescr_Type)) {
            PyMemberDef *member = ((PyMemberDescrObject *)descriptor)->d_member;
            if (member->type == T_OBJECT_EX && !(member->flags & READ_RESTRICTED)) {
                actor_offsets[field] = member->offset;
            }
        }
    }
    return 0;
}

/* semconv.add_actor_attributes, for an exact Actor. */
static int add_actor(PyObject *attributes, PyObject *actor, PyObject *ambient_impersonator) {
    PyObject *kind = NULL, *value = NULL, *roles = NULL;
    int status = -1;
    if ((kind = actor_field(actor, ACTOR_TYPE)) == NULL || (value = PyObject_GetAttr(kind, name_value_)) == NULL
        || PyDict_SetItem(attributes, keys[KEY_ACTOR_TYPE], value) < 0) {
        goto done;
    }
    int names[3] = {ACTOR_ID, ACTOR_EMAIL, ACTOR_NAME};
    int fields[3] = {KEY_USER_ID, KEY_USER_EMAIL, KEY_USER_NAME};
    for (int index = 0; index < 3; index++) {
        PyObject *field = actor_field(actor, names[index]);
        if (field == NULL) {
            goto done;
        }
        int put_status = put(attributes, fields[index], field);
        Py_DECREF(field);
        if (put_status < 0) {
            goto done;
        }
    }
    if ((roles = actor_field(actor, ACTOR_ROLES)) == NULL) {
        goto done;
    }
    int has_roles = PyObject_IsTrue(roles);
    if (has_roles < 0) {
        goto done;
    }
    if (has_roles && put_new(attributes, KEY_USER_ROLES, PySequence_List(roles)) < 0) {
        goto done;
    }
    PyObject *impersonator = actor_field(actor, ACTOR_IMPERSONATOR);
    if (impersonator == NULL) {
        goto done;
    }
    if (impersonator == Py_None) {
        int ambient = PyObject_IsTrue(ambient_impersonator);
        if (ambient < 0) {
            Py_DECREF(impersonator);
            goto done;
        }
        if (ambient) {
            Py_SETREF(impersonator, Py_NewRef(ambient_impersonator));
        }
    }
    status = put(attributes, KEY_IMPERSONATOR, impersonator);
    Py_DECREF(impersonator);
done:
    Py_XDECREF(kind);
    Py_XDECREF(value);
    Py_XDECREF(roles);
    return status;
}

/* add_actor for an actor given by its id: the attributes of Actor(id=actor_id), without making one. */
static int add_actor_id(PyObject *attributes, PyObject *actor_id, PyObject *ambient_impersonator) {
    if (PyDict_SetItem(attributes, keys[KEY_ACTOR_TYPE], string_actor_type) < 0
        || PyDict_SetItem(attributes, keys[KEY_USER_ID], actor_id) < 0) {
        return -1;
    }
    int ambient = PyObject_IsTrue(ambient_impersonator);
    if (ambient < 0) {
        return -1;
    }
    return ambient ? PyDict_SetItem(attributes, keys[KEY_IMPERSONATOR], ambient_impersonator) : 0;
}

enum {
    ARG_ACTION, ARG_ACTOR, ARG_RESOURCE, ARG_OUTCOME, ARG_METADATA, ARG_CHANGES, ARG_REASON, ARG_ERROR_TYPE,
    ARG_SEVERITY, ARG_TENANT, ARG_CLIENT_ADDRESS, ARG_USER_AGENT, ARG_SESSION_ID, ARG_REQUEST_ID, ARG_HTTP_METHOD,
    ARG_HTTP_ROUTE, ARG_URL_PATH, ARG_STATUS_CODE, ARG_TIMESTAMP, ARG_IMPERSONATOR, ARG_COUNT
};

PyDoc_STRVAR(fast_attributes_doc,
"fast_attributes(action, actor, resource, outcome, metadata, changes, reason, error_type, severity, tenant,\n"
"                client_address, user_agent, session_id, request_id, http_method, http_route, url_path,\n"
"                http_status_code, timestamp, impersonator_id) -> tuple[str, dict, SeverityNumber, str] | None\n\n"
"logger.python_fast_attributes, compiled: the same answer for every input.");

/* fast_attributes for its ARG_COUNT arguments. */
static PyObject *build_attributes(PyObject *const *args) {
    if (make_uid == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "fast_attributes: configure_fast_attributes was not called");
        return NULL;
    }
    PyObject *action = args[ARG_ACTION], *actor = args[ARG_ACTOR], *resource = args[ARG_RESOURCE],
             *metadata = args[ARG_METADATA], *status_code = args[ARG_STATUS_CODE];
    PyObject *fields = outcome_fields(args[ARG_OUTCOME]);
    if (fields == NULL) {
        if (PyErr_Occurred()) {
            return NULL;
        }
        Py_RETURN_NONE;
    }
    PyObject *resource_type = Py_None, *resource_id = Py_None, *resource_name = Py_None;
    PyObject *owned[3] = {NULL, NULL, NULL}; /* a Resource's fields, read as new references */
    PyObject *answer = NULL, *attributes = NULL, *uid = NULL;
    PyObject *metadata_copy = NULL, *changes_copy = NULL; /* copied while they are checked */
    if (resource != Py_None) {
        if (PyTuple_CheckExact(resource) && PyTuple_GET_SIZE(resource) == 2) {
            resource_type = PyTuple_GET_ITEM(resource, 0);
            resource_id = PyTuple_GET_ITEM(resource, 1);
        } else if (Py_IS_TYPE(resource, (PyTypeObject *)resource_class)) {
            if ((owned[0] = PyObject_GetAttr(resource, name_type)) == NULL
                || (owned[1] = PyObject_GetAttr(resource, name_id)) == NULL
                || (owned[2] = PyObject_GetAttr(resource, name_name)) == NULL) {
                goto done;
            }
            resource_type = owned[0], resource_id = owned[1], resource_name = owned[2];
        } else {
            answer = Py_NewRef(Py_None);
            goto done;
        }
    }
    PyObject *plain[PLAIN_STRINGS + 1] = {args[ARG_TENANT], args[ARG_CLIENT_ADDRESS], args[ARG_USER_AGENT],
                                          args[ARG_SESSION_ID], args[ARG_REQUEST_ID], args[ARG_HTTP_METHOD],
                                          args[ARG_HTTP_ROUTE], args[ARG_URL_PATH], args[ARG_ERROR_TYPE],
                                          resource_name};
    int plain_ok = 1;
    for (int index = 0; index <= PLAIN_STRINGS && plain_ok; index++) {
        plain_ok = none_or_str_within(plain[index], max_id_len);
    }
    int known_action = PyUnicode_CheckExact(action) ? PySet_Contains(known_actions, action) : 0;
    if (known_action < 0) {
        goto done;
    }
    if (!known_action
        || !(actor == Py_None || Py_IS_TYPE(actor, (PyTypeObject *)actor_class) || is_str_within(actor, max_id_len))
        || args[ARG_SEVERITY] != Py_None || args[ARG_TIMESTAMP] != Py_None) {
        answer = Py_NewRef(Py_None);
        goto done;
    }
    int has_changes = PyObject_IsTrue(args[ARG_CHANGES]); /* after the checks above, as the reference reads it */
    if (has_changes < 0) {
        goto done;
    }
    if (has_changes && (changes_copy = plain_changes(args[ARG_CHANGES])) == NULL && PyErr_Occurred()) {
        goto done;
    }
    int status_ok = status_code == Py_None;
    if (!status_ok && PyLong_CheckExact(status_code)) {
        int overflow = 0;
        long status_value = PyLong_AsLongAndOverflow(status_code, &overflow);
        status_ok = overflow == 0 && status_value >= 100 && status_value <= 599;
    }
    int metadata_ok = metadata == Py_None || (PyDict_CheckExact(metadata) && flat_and_plain(metadata));
    if (!metadata_ok && PyDict_CheckExact(metadata)) {
        metadata_copy = plain_copy(metadata, 0);
        if (metadata_copy == NULL && PyErr_Occurred()) {
            goto done;
        }
        metadata_ok = metadata_copy != NULL;
    }
    if ((has_changes && changes_copy == NULL) || !metadata_ok
        || !(resource == Py_None
             || (PyUnicode_CheckExact(resource_type) && PyUnicode_GET_LENGTH(resource_type) > 0
                 && PyUnicode_GET_LENGTH(resource_type) <= max_type_len))
        || !none_or_str_within(resource_id, max_id_len) || !status_ok
        || !none_or_str_within(args[ARG_REASON], max_reason_len) || !plain_ok) {
        answer = Py_NewRef(Py_None);
        goto done;
    }
    if ((uid = PyObject_CallNoArgs(make_uid)) == NULL || (attributes = _PyDict_NewPresized(KEY_COUNT)) == NULL
        || PyDict_SetItem(attributes, keys[KEY_ACTION], action) < 0
        || PyDict_SetItem(attributes, keys[KEY_OUTCOME], PyTuple_GET_ITEM(fields, 0)) < 0
        || PyDict_SetItem(attributes, keys[KEY_UID], uid) < 0
        || (actor != Py_None
            && (PyUnicode_CheckExact(actor) ? add_actor_id(attributes, actor, args[ARG_IMPERSONATOR])
                                            : add_actor(attributes, actor, args[ARG_IMPERSONATOR])) < 0)) {
        goto done;
    }
    if (resource_type != Py_None) {
        if (PyDict_SetItem(attributes, keys[KEY_RESOURCE_TYPE], resource_type) < 0
            || put(attributes, KEY_RESOURCE_ID, resource_id) < 0 || put(attributes, KEY_RESOURCE_NAME, resource_name) < 0) {
            goto done;
        }
    }
    for (int index = 0; index < PLAIN_STRINGS; index++) {
        if (put(attributes, KEY_TENANT + index, plain[index]) < 0) {
            goto done;
        }
    }
    if (put(attributes, KEY_REASON, args[ARG_REASON]) < 0 || put(attributes, KEY_STATUS_CODE, status_code) < 0
        || (changes_copy != NULL && PyDict_SetItem(attributes, keys[KEY_CHANGES], changes_copy) < 0)) {
        goto done;
    }
    if (metadata != Py_None && PyDict_GET_SIZE(metadata) > 0
        && put_new(attributes, KEY_METADATA, metadata_copy ? Py_NewRef(metadata_copy) : PyDict_Copy(metadata)) < 0) {
        goto done;
    }
    answer = PyTuple_Pack(4, uid, attributes, PyTuple_GET_ITEM(fields, 1), PyTuple_GET_ITEM(fields, 2));
done:
    for (int index = 0; index < 3; index++) {
        Py_XDECREF(owned[index]);
    }
    Py_XDECREF(uid);
    Py_XDECREF(attributes);
    Py_XDECREF(metadata_copy);
    Py_XDECREF(changes_copy);
    return answer;
}

static PyObject *fast_attributes(PyObject *module, PyObject *const *args, Py_ssize_t count) {
    if (count != ARG_COUNT) {
        PyErr_SetString(PyExc_TypeError, "fast_attributes takes 20 arguments");
        return NULL;
    }
    return build_attributes(args);
}

PyDoc_STRVAR(configure_doc,
"configure_fast_attributes(keys: tuple[str, ...], outcomes: dict, outcome_class: type, known_actions: set,\n"
"                          actor_class: type, resource_class: type, change_class: type, string_actor_type: str,\n"
"                          limits: tuple[int, int, int, int], new_uid) -> None\n\n"
"What fast_attributes compares with (see logger._FAST_KEYS and logger.python_fast_attributes); limits are the\n"
"id, type and reason lengths and the metadata's nesting depth (at most 64).");

static PyObject *configure_fast_attributes(PyObject *module, PyObject *const *args, Py_ssize_t count) {
    if (count != 10 || !PyTuple_CheckExact(args[0]) || PyTuple_GET_SIZE(args[0]) != KEY_COUNT
        || !PyDict_CheckExact(args[1]) || !PyType_Check(args[2]) || !PyAnySet_Check(args[3]) || !PyType_Check(args[4])
        || !PyType_Check(args[5]) || !PyType_Check(args[6]) || !PyUnicode_CheckExact(args[7])
        || !PyTuple_CheckExact(args[8]) || PyTuple_GET_SIZE(args[8]) != 4 || !PyCallable_Check(args[9])) {
        PyErr_SetString(PyExc_TypeError, "configure_fast_attributes(keys, outcomes, outcome_class, known_actions, "
                                         "actor_class, resource_class, change_class, string_actor_type, "
                                         "(id, type, reason, depth limits), new_uid)");
        return NULL;
    }
    Py_ssize_t limits[4];
    for (int index = 0; index < 4; index++) {
        limits[index] = PyLong_AsSsize_t(PyTuple_GET_ITEM(args[8], index));
        if (limits[index] == -1 && PyErr_Occurred()) {
            return NULL;
        }
    }
    if (limits[3] < 0 || limits[3] > 64) { /* plain_copy recurses once per level */
        PyErr_SetString(PyExc_ValueError, "configure_fast_attributes: the depth limit must be 0-64");
        return NULL;
    }
    for (int index = 0; index < KEY_COUNT; index++) {
        PyObject *key = PyTuple_GET_ITEM(args[0], index);
        if (!PyUnicode_CheckExact(key)) {
            PyErr_SetString(PyExc_TypeError, "configure_fast_attributes: the keys must be strings");
            return NULL;
        }
        Py_XSETREF(keys[index], Py_NewRef(key));
    }
    Py_XSETREF(outcomes, Py_NewRef(args[1]));
    Py_XSETREF(outcome_class, Py_NewRef(args[2]));
    for (int index = 0; index < member_count; index++) {
        Py_CLEAR(members[index]);
        Py_CLEAR(member_fields[index]);
    }
    member_count = 0;
    Py_ssize_t position = 0;
    PyObject *key, *fields;
    while (PyDict_Next(outcomes, &position, &key, &fields) && member_count < MAX_MEMBERS) {
        if (Py_IS_TYPE(key, (PyTypeObject *)outcome_class)) {
            members[member_count] = Py_NewRef(key);
            member_fields[member_count++] = Py_NewRef(fields);
        }
    }
    Py_XSETREF(known_actions, Py_NewRef(args[3]));
    if (find_actor_slots(args[4]) < 0) {
        return NULL;
    }
    Py_XSETREF(actor_class, Py_NewRef(args[4]));
    Py_XSETREF(resource_class, Py_NewRef(args[5]));
    Py_XSETREF(change_class, Py_NewRef(args[6]));
    Py_XSETREF(string_actor_type, Py_NewRef(args[7]));
    Py_XSETREF(make_uid, Py_NewRef(args[9]));
    max_id_len = limits[0], max_type_len = limits[1], max_reason_len = limits[2];
    max_depth = (int)limits[3];
    Py_RETURN_NONE;
}

/* ---- emit(), compiled: logger.python_emit, with AuditLogger._emit_record's direct path written out -------------- */

/* A logger's direct path (logger.PythonDirectPath is the reference): its first stage, the SDK's record count (None
 * when the SDK's metrics are off), and what must stay as it was for the path to stay open. */
typedef struct {
    PyObject_HEAD
    PyObject *stage, *count_emitted, *multi_processor, *processors, *resource;
} DirectPath;

static PyMemberDef direct_path_members[] = {
    {"stage", T_OBJECT, offsetof(DirectPath, stage), READONLY, "the chain's first direct stage"},
    {"count_emitted", T_OBJECT, offsetof(DirectPath, count_emitted), READONLY, "the SDK's record count, or None"},
    {"multi_processor", T_OBJECT, offsetof(DirectPath, multi_processor), READONLY, "the provider's processors"},
    {"processors", T_OBJECT, offsetof(DirectPath, processors), READONLY, "their list when the path was opened"},
    {"resource", T_OBJECT, offsetof(DirectPath, resource), READONLY, "the resource the stages encode"},
    {NULL, 0, 0, 0, NULL},
};

static PyObject *direct_path_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    PyObject *stage, *count_emitted, *multi_processor, *processors, *resource;
    static char *keywords[] = {"stage", "count_emitted", "multi_processor", "processors", "resource", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOOO:DirectPath", keywords, &stage, &count_emitted,
                                     &multi_processor, &processors, &resource)) {
        return NULL;
    }
    DirectPath *self = (DirectPath *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->stage = Py_NewRef(stage);
    self->count_emitted = Py_NewRef(count_emitted);
    self->multi_processor = Py_NewRef(multi_processor);
    self->processors = Py_NewRef(processors);
    self->resource = Py_NewRef(resource);
    return (PyObject *)self;
}

static int direct_path_traverse(DirectPath *self, visitproc visit, void *arg) {
    Py_VISIT(self->stage);
    Py_VISIT(self->count_emitted);
    Py_VISIT(self->multi_processor);
    Py_VISIT(self->processors);
    Py_VISIT(self->resource);
    return 0;
}

static int direct_path_clear(DirectPath *self) {
    Py_CLEAR(self->stage);
    Py_CLEAR(self->count_emitted);
    Py_CLEAR(self->multi_processor);
    Py_CLEAR(self->processors);
    Py_CLEAR(self->resource);
    return 0;
}

static void direct_path_dealloc(DirectPath *self) {
    PyObject_GC_UnTrack(self);
    direct_path_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject DirectPathType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "otel_audit._attributes.DirectPath",
    .tp_basicsize = sizeof(DirectPath),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "DirectPath(stage, count_emitted, multi_processor, processors, resource)\n\n"
              "How an SDK logger's records skip the SDK's record objects (see logger.PythonDirectPath).",
    .tp_new = direct_path_new,
    .tp_traverse = (traverseproc)direct_path_traverse,
    .tp_clear = (inquiry)direct_path_clear,
    .tp_dealloc = (destructor)direct_path_dealloc,
    .tp_members = direct_path_members,
};

/* The fields of logger.AuditContext emit fills a missing argument from, by their index in the tuple. */
enum { CONTEXT_ACTOR, CONTEXT_TENANT, CONTEXT_CLIENT_ADDRESS, CONTEXT_USER_AGENT, CONTEXT_SESSION_ID,
       CONTEXT_REQUEST_ID, CONTEXT_IMPERSONATOR, CONTEXT_FIELDS };
static const int context_argument[CONTEXT_IMPERSONATOR] = {
    ARG_ACTOR, ARG_TENANT, ARG_CLIENT_ADDRESS, ARG_USER_AGENT, ARG_SESSION_ID, ARG_REQUEST_ID,
};
static Py_ssize_t context_index[CONTEXT_FIELDS], context_size;

static PyObject *audit_context_var;             /* the AuditContext in effect */
static PyObject *otel_context_var, *get_current; /* the runtime context's ContextVar (or None: get_current()) */
static PyObject *context_class;                 /* the Context class, when its get() is dict.get (else dict) */
static PyObject *span_key, *span_class, *no_span[3]; /* the span in a Context; the ids of no span */
static PyObject *binding, *event_names, *event_name_of, *sdk_emit;
static Py_ssize_t event_names_most;
static PyObject *name_otel_logger, *name_generation, *name_binding_generation, *name_direct, *name_processors,
    *name_logger_config, *name_is_enabled, *name_resource, *name_get, *name_get_span_context, *name_trace_id,
    *name_span_id, *name_trace_flags, *name_emit_record, *name_emit_validated;

/* The event name of `action`, from the cache logger.py shares (a new reference). */
static PyObject *event_name(PyObject *action) {
    PyObject *name = PyDict_GetItemWithError(event_names, action);
    if (name != NULL) {
        return Py_NewRef(name);
    }
    if (PyErr_Occurred() || (name = PyObject_CallOneArg(event_name_of, action)) == NULL) {
        return NULL;
    }
    if (PyDict_GET_SIZE(event_names) < event_names_most && PyDict_SetItem(event_names, action, name) < 0) {
        Py_DECREF(name);
        return NULL;
    }
    return name;
}

/* The current span's trace id, span id and trace flags into `ids` (new references), as get_current_span() and
 * get_span_context() read them; the invalid span's when there is none. */
static int span_ids(PyObject *ids[3]) {
    PyObject *context = NULL, *span = NULL, *span_context = NULL;
    int status = -1;
    if (otel_context_var != Py_None) {
        if (PyContextVar_Get(otel_context_var, NULL, &context) < 0) {
            return -1;
        }
    } else {
        context = PyObject_CallNoArgs(get_current);
    }
    if (context == NULL) {
        return -1;
    }
    if (Py_IS_TYPE(context, (PyTypeObject *)context_class) || PyDict_CheckExact(context)) {
        span = Py_XNewRef(PyDict_GetItemWithError(context, span_key));
        if (span == NULL && PyErr_Occurred()) {
            goto done;
        }
    } else if ((span = PyObject_CallMethodOneArg(context, name_get, span_key)) == NULL) {
        goto done;
    }
    int is_span = span == NULL || span == Py_None ? 0 : PyObject_IsInstance(span, span_class);
    if (is_span < 0) {
        goto done;
    }
    if (!is_span) {
        for (int index = 0; index < 3; index++) {
            ids[index] = Py_NewRef(no_span[index]);
        }
        status = 0;
        goto done;
    }
    if ((span_context = PyObject_CallMethodNoArgs(span, name_get_span_context)) == NULL) {
        goto done;
    }
    PyObject *names[3] = {name_trace_id, name_span_id, name_trace_flags};
    for (int index = 0; index < 3; index++) {
        if ((ids[index] = PyObject_GetAttr(span_context, names[index])) == NULL) {
            for (int earlier = 0; earlier < index; earlier++) {
                Py_CLEAR(ids[earlier]);
            }
            goto done;
        }
    }
    status = 0;
done:
    Py_DECREF(context);
    Py_XDECREF(span);
    Py_XDECREF(span_context);
    return status;
}

/* Whether the direct path is open for `sdk_logger`'s next record (see AuditLogger._emit_record): 1, 0 or -1. */
static int direct_path_open(DirectPath *direct, PyObject *sdk_logger) {
    PyObject *processors = PyObject_GetAttr(direct->multi_processor, name_processors);
    if (processors == NULL) {
        return -1;
    }
    Py_DECREF(processors); /* compared by identity only */
    if (processors != direct->processors) {
        return 0;
    }
    PyObject *config = PyObject_GetAttr(sdk_logger, name_logger_config);
    PyObject *enabled = config == NULL ? NULL : PyObject_GetAttr(config, name_is_enabled);
    Py_XDECREF(config);
    int open = enabled == NULL ? -1 : PyObject_IsTrue(enabled);
    Py_XDECREF(enabled);
    if (open != 1) {
        return open;
    }
    PyObject *resource = PyObject_GetAttr(sdk_logger, name_resource);
    if (resource == NULL) {
        return -1;
    }
    Py_DECREF(resource);
    return resource == direct->resource;
}

/* AuditLogger._emit_record(now, now, severity_number, severity_text, attributes, action) for `audit_logger`: the
 * direct path here when it is open, else the method itself (which binds the logger anew where needed); a record
 * the stages leave takes the SDK's path (logger._sdk_emit). */
static int emit_record(PyObject *audit_logger, PyObject *now, PyObject *severity_number, PyObject *severity_text,
                       PyObject *attributes, PyObject *action) {
    PyObject *sdk_logger = NULL, *generation = NULL, *bound = NULL, *direct = NULL, *name = NULL,
             *ids[3] = {NULL, NULL, NULL}, *result = NULL;
    int status = -1, current = 0, open = 0;
    if ((sdk_logger = PyObject_GetAttr(audit_logger, name_otel_logger)) == NULL
        || (generation = PyObject_GetAttr(audit_logger, name_generation)) == NULL
        || (bound = PyObject_GetAttr(binding, name_binding_generation)) == NULL
        || (direct = PyObject_GetAttr(audit_logger, name_direct)) == NULL) {
        goto done;
    }
    if (sdk_logger != Py_None && Py_IS_TYPE(direct, &DirectPathType)
        && (current = PyObject_RichCompareBool(generation, bound, Py_EQ)) == 1) {
        open = direct_path_open((DirectPath *)direct, sdk_logger);
    }
    if (current < 0 || open < 0) {
        goto done;
    }
    if (!open) {
        PyObject *call[7] = {audit_logger, now, now, severity_number, severity_text, attributes, action};
        result = PyObject_VectorcallMethod(name_emit_record, call, 7 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
        status = result == NULL ? -1 : 0;
        goto done;
    }
    if ((name = event_name(action)) == NULL || span_ids(ids) < 0) {
        goto done;
    }
    PyObject *fields[10] = {NULL, now, now, severity_number, severity_text, attributes, name, ids[0], ids[1], ids[2]};
    result = PyObject_Vectorcall(((DirectPath *)direct)->stage, fields + 1, 9 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    int finished = result == NULL ? -1 : PyObject_IsTrue(result);
    if (finished < 0) {
        goto done;
    }
    Py_CLEAR(result);
    if (finished) {
        PyObject *count_emitted = ((DirectPath *)direct)->count_emitted;
        result = count_emitted == Py_None ? Py_NewRef(Py_None) : PyObject_CallNoArgs(count_emitted);
    } else {
        fields[0] = sdk_logger;
        fields[6] = name;
        result = PyObject_Vectorcall(sdk_emit, fields, 7, NULL);
    }
    status = result == NULL ? -1 : 0;
done:
    Py_XDECREF(sdk_logger);
    Py_XDECREF(generation);
    Py_XDECREF(bound);
    Py_XDECREF(direct);
    Py_XDECREF(name);
    for (int index = 0; index < 3; index++) {
        Py_XDECREF(ids[index]);
    }
    Py_XDECREF(result);
    return status;
}

enum { EMIT_LOGGER, EMIT_ARGUMENTS = 1 + ARG_IMPERSONATOR };

PyDoc_STRVAR(emit_doc,
"emit(audit_logger, action, actor, resource, outcome, metadata, changes, reason, error_type, severity, tenant,\n"
"     client_address, user_agent, session_id, request_id, http_method, http_route, url_path, http_status_code,\n"
"     timestamp) -> str\n\n"
"logger.python_emit, compiled: AuditLogger.emit's body for the arguments in its order.");

static PyObject *emit(PyObject *module, PyObject *const *args, Py_ssize_t count) {
    if (count != EMIT_ARGUMENTS) {
        PyErr_SetString(PyExc_TypeError, "emit takes the audit logger and emit's 19 arguments");
        return NULL;
    }
    if (audit_context_var == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "emit: configure_emit was not called");
        return NULL;
    }
    PyObject *context;
    if (PyContextVar_Get(audit_context_var, NULL, &context) < 0) {
        return NULL;
    }
    if (context == NULL || !PyTuple_Check(context) || PyTuple_GET_SIZE(context) != context_size) {
        Py_XDECREF(context);
        PyErr_SetString(PyExc_TypeError, "emit: the audit context is not an AuditContext");
        return NULL;
    }
    /* fast_attributes' arguments: emit's, each missing one filled from the context, then its impersonator. */
    PyObject *arguments[1 + ARG_COUNT];
    arguments[0] = args[EMIT_LOGGER];
    memcpy(arguments + 1, args + 1, sizeof(PyObject *) * ARG_IMPERSONATOR);
    for (int field = 0; field < CONTEXT_IMPERSONATOR; field++) {
        if (arguments[1 + context_argument[field]] == Py_None) {
            arguments[1 + context_argument[field]] = PyTuple_GET_ITEM(context, context_index[field]);
        }
    }
    arguments[1 + ARG_IMPERSONATOR] = PyTuple_GET_ITEM(context, context_index[CONTEXT_IMPERSONATOR]);
    PyObject *fast = build_attributes(arguments + 1), *uid = NULL, *now = NULL;
    if (fast == Py_None) {
        uid = PyObject_VectorcallMethod(name_emit_validated, arguments, 1 + ARG_COUNT, NULL);
    } else if (fast != NULL) {
        struct timespec clock;
        clock_gettime(CLOCK_REALTIME, &clock); /* time.time_ns() */
        now = PyLong_FromLongLong((long long)clock.tv_sec * 1000000000LL + clock.tv_nsec);
        if (now != NULL && emit_record(args[EMIT_LOGGER], now, PyTuple_GET_ITEM(fast, 2), PyTuple_GET_ITEM(fast, 3),
                                       PyTuple_GET_ITEM(fast, 1), args[1 + ARG_ACTION]) == 0) {
            uid = Py_NewRef(PyTuple_GET_ITEM(fast, 0));
        }
    }
    Py_XDECREF(now);
    Py_XDECREF(fast);
    Py_DECREF(context);
    return uid;
}

PyDoc_STRVAR(configure_emit_doc,
"configure_emit(audit_context_var, context_fields: tuple[int, ...], otel_context_var | None, get_current,\n"
"               context_class, span_key, span_class, no_span_ids: tuple, binding, event_names: dict, event_name,\n"
"               most_names: int, sdk_emit) -> None\n\n"
"What emit reads (see logger.py): the AuditContext variable, the indices of its actor, tenant, client address,\n"
"user agent, session id, request id and impersonator, and its size; the OTel runtime context, the Context class\n"
"read as a dict (dict itself when its get() is another) and the span in it; the binding; the event name cache,\n"
"its maker and size; the SDK's path for a record the stages leave.");

static PyObject *configure_emit(PyObject *module, PyObject *const *args, Py_ssize_t count) {
    if (count != 13 || !PyContextVar_CheckExact(args[0]) || !PyTuple_CheckExact(args[1])
        || PyTuple_GET_SIZE(args[1]) != CONTEXT_FIELDS + 1 || !(args[2] == Py_None || PyContextVar_CheckExact(args[2]))
        || !PyCallable_Check(args[3]) || !PyType_Check(args[4]) || !PyType_Check(args[6])
        || !PyTuple_CheckExact(args[7]) || PyTuple_GET_SIZE(args[7]) != 3 || !PyDict_CheckExact(args[9])
        || !PyCallable_Check(args[10]) || !PyLong_CheckExact(args[11]) || !PyCallable_Check(args[12])) {
        PyErr_SetString(PyExc_TypeError, "configure_emit(audit_context_var, (indices..., size), otel_context_var, "
                                         "get_current, context_class, span_key, span_class, no_span_ids, binding, "
                                         "event_names, event_name, most_names, sdk_emit)");
        return NULL;
    }
    for (int field = 0; field <= CONTEXT_FIELDS; field++) {
        Py_ssize_t index = PyLong_AsSsize_t(PyTuple_GET_ITEM(args[1], field));
        if (index == -1 && PyErr_Occurred()) {
            return NULL;
        }
        if (field == CONTEXT_FIELDS) {
            context_size = index;
        } else {
            context_index[field] = index;
        }
    }
    for (int field = 0; field < CONTEXT_FIELDS; field++) {
        if (context_index[field] < 0 || context_index[field] >= context_size) {
            PyErr_SetString(PyExc_ValueError, "configure_emit: a context field index is out of range");
            return NULL;
        }
    }
    if ((event_names_most = PyLong_AsSsize_t(args[11])) == -1 && PyErr_Occurred()) {
        return NULL;
    }
    Py_XSETREF(audit_context_var, Py_NewRef(args[0]));
    Py_XSETREF(otel_context_var, Py_NewRef(args[2]));
    Py_XSETREF(get_current, Py_NewRef(args[3]));
    Py_XSETREF(context_class, Py_NewRef(args[4]));
    Py_XSETREF(span_key, Py_NewRef(args[5]));
    Py_XSETREF(span_class, Py_NewRef(args[6]));
    for (int index = 0; index < 3; index++) {
        Py_XSETREF(no_span[index], Py_NewRef(PyTuple_GET_ITEM(args[7], index)));
    }
    Py_XSETREF(binding, Py_NewRef(args[8]));
    Py_XSETREF(event_names, Py_NewRef(args[9]));
    Py_XSETREF(event_name_of, Py_NewRef(args[10]));
    Py_XSETREF(sdk_emit, Py_NewRef(args[12]));
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"fast_attributes", (PyCFunction)(void (*)(void))fast_attributes, METH_FASTCALL, fast_attributes_doc},
    {"configure_fast_attributes", (PyCFunction)(void (*)(void))configure_fast_attributes, METH_FASTCALL, configure_doc},
    {"emit", (PyCFunction)(void (*)(void))emit, METH_FASTCALL, emit_doc},
    {"configure_emit", (PyCFunction)(void (*)(void))configure_emit, METH_FASTCALL, configure_emit_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_definition = {
    PyModuleDef_HEAD_INIT, "_attributes", "emit's core, compiled (see logger.python_emit).", -1,
    methods,
};

PyMODINIT_FUNC PyInit__attributes(void) {
    struct {
        PyObject **slot;
        const char *text;
    } names[] = {
        {&name_type, "type"}, {&name_id, "id"}, {&name_name, "name"}, {&name_email, "email"},
        {&name_roles, "roles"}, {&name_impersonator_id, "impersonator_id"}, {&name_value_, "_value_"},
        {&name_old, "old"}, {&name_new, "new"},
        {&name_otel_logger, "_otel_logger"}, {&name_generation, "_generation"},
        {&name_binding_generation, "generation"}, {&name_direct, "_direct"},
        {&name_processors, "_log_record_processors"}, {&name_logger_config, "_logger_config"},
        {&name_is_enabled, "is_enabled"}, {&name_resource, "_resource"}, {&name_get, "get"},
        {&name_get_span_context, "get_span_context"}, {&name_trace_id, "trace_id"}, {&name_span_id, "span_id"},
        {&name_trace_flags, "trace_flags"}, {&name_emit_record, "_emit_record"},
        {&name_emit_validated, "_emit_validated"},
    };
    for (size_t index = 0; index < sizeof(names) / sizeof(names[0]); index++) {
        if ((*names[index].slot = PyUnicode_InternFromString(names[index].text)) == NULL) {
            return NULL;
        }
    }
    if (PyType_Ready(&DirectPathType) < 0) {
        return NULL;
    }
    PyObject *module = PyModule_Create(&module_definition);
    if (module == NULL || PyModule_AddObjectRef(module, "DirectPath", (PyObject *)&DirectPathType) < 0) {
        Py_XDECREF(module);
        return NULL;
    }
    return module;
}
