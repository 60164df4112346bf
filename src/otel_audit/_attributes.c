/* fast_attributes(), compiled: emit's fast path (logger.python_fast_attributes is the reference and the fallback).
 * The checks that send a call to the AuditEvent path, the new record id and the attribute dict in event_to_attributes'
 * order, without the ~40 bytecode-level steps per call the reference takes. Everything it compares with (the
 * attribute keys, the outcomes, the known actions, the Actor and Resource classes, the limits, the id maker) comes
 * from logger.py through configure_fast_attributes, so the conventions stay in one place.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>

enum {
    KEY_ACTION, KEY_OUTCOME, KEY_UID, KEY_RESOURCE_TYPE, KEY_RESOURCE_ID, KEY_RESOURCE_NAME, KEY_TENANT,
    KEY_CLIENT_ADDRESS, KEY_USER_AGENT, KEY_SESSION_ID, KEY_REQUEST_ID, KEY_HTTP_METHOD, KEY_HTTP_ROUTE, KEY_URL_PATH,
    KEY_ERROR_TYPE, KEY_REASON, KEY_STATUS_CODE, KEY_METADATA, KEY_ACTOR_TYPE, KEY_USER_ID, KEY_USER_EMAIL,
    KEY_USER_NAME, KEY_USER_ROLES, KEY_IMPERSONATOR, KEY_COUNT
};

/* The plain strings of an event, in the order their attributes are added (keys KEY_TENANT..KEY_ERROR_TYPE). */
#define PLAIN_STRINGS 9

static PyObject *keys[KEY_COUNT];
static PyObject *outcomes, *outcome_class, *known_actions, *actor_class, *resource_class, *make_uid;
static Py_ssize_t max_id_len, max_type_len, max_reason_len;
static PyObject *name_type, *name_id, *name_name, *name_email, *name_roles, *name_impersonator_id, *name_value_;

static int is_str_within(PyObject *value, Py_ssize_t most) {
    return PyUnicode_CheckExact(value) && PyUnicode_GET_LENGTH(value) <= most;
}

static int none_or_str_within(PyObject *value, Py_ssize_t most) {
    return value == Py_None || is_str_within(value, most);
}

/* model.is_flat_and_plain: string keys; str, bool, None, int64 or finite float values. */
static int flat_and_plain(PyObject *mapping) {
    Py_ssize_t position = 0;
    PyObject *key, *item;
    while (PyDict_Next(mapping, &position, &key, &item)) {
        if (!PyUnicode_CheckExact(key)) {
            return 0;
        }
        if (PyUnicode_CheckExact(item) || PyBool_Check(item) || item == Py_None) {
            continue;
        }
        if (PyLong_CheckExact(item)) {
            int overflow = 0;
            PyLong_AsLongLongAndOverflow(item, &overflow);
            if (overflow == 0) {
                continue;
            }
            return 0;
        }
        if (PyFloat_CheckExact(item) && isfinite(PyFloat_AS_DOUBLE(item))) {
            continue;
        }
        return 0;
    }
    return 1;
}

/* The outcome's (value, severity number, severity text), borrowed; NULL without an error when it is not one. */
static PyObject *outcome_fields(PyObject *outcome) {
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

/* semconv.add_actor_attributes. */
static int add_actor(PyObject *attributes, PyObject *actor, PyObject *ambient_impersonator) {
    PyObject *kind = NULL, *value = NULL, *roles = NULL;
    int status = -1;
    if ((kind = PyObject_GetAttr(actor, name_type)) == NULL || (value = PyObject_GetAttr(kind, name_value_)) == NULL
        || PyDict_SetItem(attributes, keys[KEY_ACTOR_TYPE], value) < 0) {
        goto done;
    }
    PyObject *names[3] = {name_id, name_email, name_name};
    int fields[3] = {KEY_USER_ID, KEY_USER_EMAIL, KEY_USER_NAME};
    for (int index = 0; index < 3; index++) {
        PyObject *field = PyObject_GetAttr(actor, names[index]);
        if (field == NULL) {
            goto done;
        }
        int put_status = put(attributes, fields[index], field);
        Py_DECREF(field);
        if (put_status < 0) {
            goto done;
        }
    }
    if ((roles = PyObject_GetAttr(actor, name_roles)) == NULL) {
        goto done;
    }
    int has_roles = PyObject_IsTrue(roles);
    if (has_roles < 0) {
        goto done;
    }
    if (has_roles && put_new(attributes, KEY_USER_ROLES, PySequence_List(roles)) < 0) {
        goto done;
    }
    PyObject *impersonator = PyObject_GetAttr(actor, name_impersonator_id);
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

static PyObject *fast_attributes(PyObject *module, PyObject *const *args, Py_ssize_t count) {
    if (count != ARG_COUNT) {
        PyErr_SetString(PyExc_TypeError, "fast_attributes takes 20 arguments");
        return NULL;
    }
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
    if (!known_action || !(actor == Py_None || Py_IS_TYPE(actor, (PyTypeObject *)actor_class))
        || args[ARG_SEVERITY] != Py_None || args[ARG_TIMESTAMP] != Py_None) {
        answer = Py_NewRef(Py_None);
        goto done;
    }
    int has_changes = PyObject_IsTrue(args[ARG_CHANGES]); /* after the checks above, as the reference reads it */
    if (has_changes < 0) {
        goto done;
    }
    int status_ok = status_code == Py_None;
    if (!status_ok && PyLong_CheckExact(status_code)) {
        int overflow = 0;
        long status_value = PyLong_AsLongAndOverflow(status_code, &overflow);
        status_ok = overflow == 0 && status_value >= 100 && status_value <= 599;
    }
    if (has_changes
        || !(metadata == Py_None || (PyDict_CheckExact(metadata) && flat_and_plain(metadata)))
        || !(resource == Py_None
             || (PyUnicode_CheckExact(resource_type) && PyUnicode_GET_LENGTH(resource_type) > 0
                 && PyUnicode_GET_LENGTH(resource_type) <= max_type_len))
        || !none_or_str_within(resource_id, max_id_len) || !status_ok
        || !none_or_str_within(args[ARG_REASON], max_reason_len) || !plain_ok) {
        answer = Py_NewRef(Py_None);
        goto done;
    }
    if ((uid = PyObject_CallNoArgs(make_uid)) == NULL || (attributes = PyDict_New()) == NULL
        || PyDict_SetItem(attributes, keys[KEY_ACTION], action) < 0
        || PyDict_SetItem(attributes, keys[KEY_OUTCOME], PyTuple_GET_ITEM(fields, 0)) < 0
        || PyDict_SetItem(attributes, keys[KEY_UID], uid) < 0
        || (actor != Py_None && add_actor(attributes, actor, args[ARG_IMPERSONATOR]) < 0)) {
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
    if (put(attributes, KEY_REASON, args[ARG_REASON]) < 0 || put(attributes, KEY_STATUS_CODE, status_code) < 0) {
        goto done;
    }
    if (metadata != Py_None && PyDict_GET_SIZE(metadata) > 0
        && put_new(attributes, KEY_METADATA, PyDict_Copy(metadata)) < 0) {
        goto done;
    }
    answer = PyTuple_Pack(4, uid, attributes, PyTuple_GET_ITEM(fields, 1), PyTuple_GET_ITEM(fields, 2));
done:
    for (int index = 0; index < 3; index++) {
        Py_XDECREF(owned[index]);
    }
    Py_XDECREF(uid);
    Py_XDECREF(attributes);
    return answer;
}

PyDoc_STRVAR(configure_doc,
"configure_fast_attributes(keys: tuple[str, ...], outcomes: dict, outcome_class: type, known_actions: set,\n"
"                          actor_class: type, resource_class: type, limits: tuple[int, int, int], new_uid) -> None\n\n"
"What fast_attributes compares with (see logger._FAST_KEYS and logger.python_fast_attributes); limits are the\n"
"id, type and reason lengths.");

static PyObject *configure_fast_attributes(PyObject *module, PyObject *const *args, Py_ssize_t count) {
    if (count != 8 || !PyTuple_CheckExact(args[0]) || PyTuple_GET_SIZE(args[0]) != KEY_COUNT
        || !PyDict_CheckExact(args[1]) || !PyType_Check(args[2]) || !PyAnySet_Check(args[3]) || !PyType_Check(args[4])
        || !PyType_Check(args[5]) || !PyTuple_CheckExact(args[6]) || PyTuple_GET_SIZE(args[6]) != 3
        || !PyCallable_Check(args[7])) {
        PyErr_SetString(PyExc_TypeError, "configure_fast_attributes(keys, outcomes, outcome_class, known_actions, "
                                         "actor_class, resource_class, (id, type, reason limits), new_uid)");
        return NULL;
    }
    Py_ssize_t limits[3];
    for (int index = 0; index < 3; index++) {
        limits[index] = PyLong_AsSsize_t(PyTuple_GET_ITEM(args[6], index));
        if (limits[index] == -1 && PyErr_Occurred()) {
            return NULL;
        }
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
    Py_XSETREF(known_actions, Py_NewRef(args[3]));
    Py_XSETREF(actor_class, Py_NewRef(args[4]));
    Py_XSETREF(resource_class, Py_NewRef(args[5]));
    Py_XSETREF(make_uid, Py_NewRef(args[7]));
    max_id_len = limits[0], max_type_len = limits[1], max_reason_len = limits[2];
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"fast_attributes", (PyCFunction)(void (*)(void))fast_attributes, METH_FASTCALL, fast_attributes_doc},
    {"configure_fast_attributes", (PyCFunction)(void (*)(void))configure_fast_attributes, METH_FASTCALL, configure_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_definition = {
    PyModuleDef_HEAD_INIT, "_attributes", "emit's fast path, compiled (see logger.python_fast_attributes).", -1,
    methods,
};

PyMODINIT_FUNC PyInit__attributes(void) {
    struct {
        PyObject **slot;
        const char *text;
    } names[] = {
        {&name_type, "type"}, {&name_id, "id"}, {&name_name, "name"}, {&name_email, "email"},
        {&name_roles, "roles"}, {&name_impersonator_id, "impersonator_id"}, {&name_value_, "_value_"},
    };
    for (size_t index = 0; index < sizeof(names) / sizeof(names[0]); index++) {
        if ((*names[index].slot = PyUnicode_InternFromString(names[index].text)) == NULL) {
            return NULL;
        }
    }
    return PyModule_Create(&module_definition);
}
