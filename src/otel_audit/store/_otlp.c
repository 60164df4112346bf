/* OTLP logs request decoding for the store's ingest, compiled: the measured hot path of ingest.
 *
 * decode_logs(data) reads an ExportLogsServiceRequest's wire bytes straight into the plain Python values
 * otlp.decoded_request produces from the protobuf (upb) objects: attribute maps as dicts, ids as hex text. It
 * answers None for anything it does not take exactly as upb would (malformed or truncated input, invalid UTF-8,
 * a message field given twice, which protobuf merges, groups, string-table indexes, entity references, nesting
 * deeper than MAX_DEPTH), and otlp.py then decodes the request with protobuf, which also names the error.
 * Fields protobuf parses but the store does not keep (schema URLs, scope attributes) are still checked, so
 * whatever upb refuses is declined here too. No Python code runs while decoding.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define DECLINE 1
#define MAX_DEPTH 32  /* AnyValue levels: two messages each, well within upb's limit of 100 */

enum { VARINT = 0, FIXED64 = 1, LEN = 2, FIXED32 = 5 };

typedef struct {
    const uint8_t *at;
    const uint8_t *end;
} Reader;

static int read_varint(Reader *reader, uint64_t *out) {
    uint64_t value = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (reader->at >= reader->end) {
            return DECLINE;
        }
        uint8_t byte = *reader->at++;
        value |= (uint64_t)(byte & 0x7F) << shift;
        if (!(byte & 0x80)) {
            *out = value;
            return 0;
        }
    }
    return DECLINE;
}

/* The next field's number and wire type; DECLINE for field number 0 and wire types upb rejects or groups. */
static int read_tag(Reader *reader, uint32_t *field, int *wire) {
    uint64_t tag;
    if (read_varint(reader, &tag) != 0 || tag > UINT32_MAX || (tag >> 3) == 0) {
        return DECLINE;
    }
    *field = (uint32_t)(tag >> 3);
    *wire = (int)(tag & 7);
    if (*wire != VARINT && *wire != FIXED64 && *wire != LEN && *wire != FIXED32) {
        return DECLINE;
    }
    return 0;
}

/* A length-delimited field's contents as a sub-reader. */
static int read_len(Reader *reader, Reader *inner) {
    uint64_t size;
    if (read_varint(reader, &size) != 0 || size > (uint64_t)(reader->end - reader->at)) {
        return DECLINE;
    }
    inner->at = reader->at;
    inner->end = reader->at + size;
    reader->at += size;
    return 0;
}

static int read_fixed64(Reader *reader, uint64_t *out) {
    if (reader->end - reader->at < 8) {
        return DECLINE;
    }
    uint64_t value = 0;
    for (int index = 7; index >= 0; index--) {
        value = (value << 8) | reader->at[index];
    }
    reader->at += 8;
    *out = value;
    return 0;
}

/* Skip a field the store does not read (unknown, or known with another wire type: upb keeps those as unknown). */
static int skip(Reader *reader, int wire) {
    uint64_t ignored;
    Reader inner;
    switch (wire) {
    case VARINT:
        return read_varint(reader, &ignored);
    case FIXED64:
        return read_fixed64(reader, &ignored);
    case LEN:
        return read_len(reader, &inner);
    default:
        if (reader->end - reader->at < 4) {
            return DECLINE;
        }
        reader->at += 4;
        return 0;
    }
}

/* Strict UTF-8 text (upb refuses invalid UTF-8 in string fields); DECLINE when it is not valid. */
static int read_text(Reader *reader, PyObject **out) {
    Reader inner;
    if (read_len(reader, &inner) != 0) {
        return DECLINE;
    }
    PyObject *text = PyUnicode_DecodeUTF8((const char *)inner.at, inner.end - inner.at, NULL);
    if (text == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
            return -1;
        }
        PyErr_Clear();
        return DECLINE;
    }
    Py_XSETREF(*out, text);
    return 0;
}

/* Attribute keys repeat from record to record: a small direct-mapped cache of decoded keys spares a decode, an
 * allocation and a hash for each, and makes each later dict lookup of the key an identity hit. A slot is used
 * only when its bytes match exactly, and holds only text that decoded (valid UTF-8). The GIL is held while
 * decode_logs runs, which is the only user. */
#define KEY_CACHE_SLOTS 256
#define KEY_CACHE_MAX_SIZE 64

typedef struct {
    Py_ssize_t size;
    char bytes[KEY_CACHE_MAX_SIZE];
    PyObject *text;
} KeySlot;

static KeySlot key_cache[KEY_CACHE_SLOTS];

/* A KeyValue's key: read_text, through the key cache. */
static int read_key(Reader *reader, PyObject **out) {
    Reader inner;
    if (read_len(reader, &inner) != 0) {
        return DECLINE;
    }
    Py_ssize_t size = inner.end - inner.at;
    KeySlot *slot = NULL;
    if (size > 0 && size <= KEY_CACHE_MAX_SIZE) {
        uint32_t hash = 2166136261u;  /* FNV-1a */
        for (Py_ssize_t index = 0; index < size; index++) {
            hash = (hash ^ inner.at[index]) * 16777619u;
        }
        slot = &key_cache[hash & (KEY_CACHE_SLOTS - 1)];
        if (slot->text != NULL && slot->size == size && memcmp(slot->bytes, inner.at, size) == 0) {
            Py_XSETREF(*out, Py_NewRef(slot->text));
            return 0;
        }
    }
    PyObject *text = PyUnicode_DecodeUTF8((const char *)inner.at, size, NULL);
    if (text == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
            return -1;
        }
        PyErr_Clear();
        return DECLINE;
    }
    if (slot != NULL && PyObject_Hash(text) != -1) {
        Py_XSETREF(slot->text, Py_NewRef(text));
        slot->size = size;
        memcpy(slot->bytes, inner.at, size);
    }
    Py_XSETREF(*out, text);
    return 0;
}

static PyObject *hex_text(Reader *bytes) {
    static const char digits[] = "0123456789abcdef";
    Py_ssize_t size = bytes->end - bytes->at;
    PyObject *text = PyUnicode_New(size * 2, 127);
    if (text == NULL) {
        return NULL;
    }
    Py_UCS1 *out = PyUnicode_1BYTE_DATA(text);
    for (Py_ssize_t index = 0; index < size; index++) {
        out[2 * index] = (Py_UCS1)digits[bytes->at[index] >> 4];
        out[2 * index + 1] = (Py_UCS1)digits[bytes->at[index] & 15];
    }
    return text;
}

/* Field handlers: called with each field's number and wire type; UNHANDLED skips the field. */
#define UNHANDLED 2
typedef int (*FieldHandler)(Reader *reader, uint32_t field, int wire, void *state);

static int each_field(Reader reader, FieldHandler handle, void *state) {
    while (reader.at < reader.end) {
        uint32_t field;
        int wire;
        if (read_tag(&reader, &field, &wire) != 0) {
            return DECLINE;
        }
        int status = handle(&reader, field, wire, state);
        if (status == UNHANDLED) {
            status = skip(&reader, wire);
        }
        if (status != 0) {
            return status;
        }
    }
    return 0;
}

/* Decode a length-delimited message with `decode` and append the result to `list`. */
typedef int (*Decoder)(Reader reader, void *context, PyObject **out);

static int append_decoded(Reader *reader, PyObject *list, Decoder decode, void *context) {
    Reader inner;
    PyObject *item = NULL;
    int status = read_len(reader, &inner);
    if (status == 0 && (status = decode(inner, context, &item)) == 0) {
        status = PyList_Append(list, item);
        Py_DECREF(item);
    }
    return status;
}

static int any_value(Reader reader, void *depth, PyObject **out);

/* KeyValue: the key (a later one replaces an earlier one, as protobuf does) and the value, at most once. */
typedef struct {
    PyObject *key;
    PyObject *value;
    intptr_t depth;
} Pair;

static int pair_field(Reader *reader, uint32_t field, int wire, void *state) {
    Pair *pair = state;
    Reader inner;
    if (field == 1 && wire == LEN) {
        return read_key(reader, &pair->key);
    }
    if (field == 2 && wire == LEN) {
        if (pair->value != NULL || read_len(reader, &inner) != 0) {  /* protobuf would merge two values */
            return DECLINE;
        }
        return any_value(inner, (void *)pair->depth, &pair->value);
    }
    return field == 3 && wire == VARINT ? DECLINE : UNHANDLED;  /* key_strindex */
}

/* A repeated KeyValue field's next element, stored into the dict `into` (as otlp.key_values does). */
static int key_value(Reader *reader, PyObject *into, intptr_t depth) {
    Reader inner;
    Pair pair = {NULL, NULL, depth};
    int status = read_len(reader, &inner);
    if (status == 0) {
        status = each_field(inner, pair_field, &pair);
    }
    if (status == 0) {
        if (pair.key == NULL && (pair.key = PyUnicode_New(0, 0)) == NULL) {
            status = -1;
        } else {
            status = PyDict_SetItem(into, pair.key, pair.value != NULL ? pair.value : Py_None);
        }
    }
    Py_XDECREF(pair.key);
    Py_XDECREF(pair.value);
    return status;
}

/* ArrayValue and KeyValueList: their repeated field 1, into a list or a dict. */
typedef struct {
    PyObject *into;
    intptr_t depth;
} Container;

static int array_field(Reader *reader, uint32_t field, int wire, void *state) {
    Container *array = state;
    return field == 1 && wire == LEN ? append_decoded(reader, array->into, any_value, (void *)array->depth) : UNHANDLED;
}

static int kvlist_field(Reader *reader, uint32_t field, int wire, void *state) {
    Container *map = state;
    return field == 1 && wire == LEN ? key_value(reader, map->into, map->depth) : UNHANDLED;
}

static int container(Reader *reader, PyObject *into, FieldHandler handle, intptr_t depth, PyObject **out) {
    Reader inner;
    Container state = {into, depth};
    int status = into == NULL ? -1 : read_len(reader, &inner);
    if (status == 0) {
        status = each_field(inner, handle, &state);
    }
    *out = into;
    return status;
}

/* AnyValue: one value of the oneof; a second one (protobuf keeps the last, or merges) and string-table
 * indexes are declined. */
typedef struct {
    PyObject *value;
    intptr_t depth;
    int seen;
} OneOf;

static int any_value_field(Reader *reader, uint32_t field, int wire, void *state) {
    OneOf *oneof = state;
    int known = (field == 1 && wire == LEN) || ((field == 2 || field == 3 || field == 8) && wire == VARINT)
                || (field == 4 && wire == FIXED64) || (field >= 5 && field <= 7 && wire == LEN);
    if (!known) {
        return UNHANDLED;
    }
    if (oneof->seen++ || field == 8) {
        return DECLINE;
    }
    uint64_t number;
    Reader inner;
    switch (field) {
    case 1:
        return read_text(reader, &oneof->value);
    case 2:
        if (read_varint(reader, &number) != 0) {
            return DECLINE;
        }
        oneof->value = PyBool_FromLong(number != 0);
        return 0;
    case 3:
        if (read_varint(reader, &number) != 0) {
            return DECLINE;
        }
        oneof->value = PyLong_FromLongLong((int64_t)number);
        return oneof->value == NULL ? -1 : 0;
    case 4: {
        double real;
        if (read_fixed64(reader, &number) != 0) {
            return DECLINE;
        }
        memcpy(&real, &number, sizeof real);
        oneof->value = PyFloat_FromDouble(real);
        return oneof->value == NULL ? -1 : 0;
    }
    case 5:
        return container(reader, PyList_New(0), array_field, oneof->depth + 1, &oneof->value);
    case 6:
        return container(reader, PyDict_New(), kvlist_field, oneof->depth + 1, &oneof->value);
    default:
        if (read_len(reader, &inner) != 0) {
            return DECLINE;
        }
        oneof->value = PyBytes_FromStringAndSize((const char *)inner.at, inner.end - inner.at);
        return oneof->value == NULL ? -1 : 0;
    }
}

/* An AnyValue as otlp.any_value returns it: None when no value is set. `depth` is an intptr_t. */
static int any_value(Reader reader, void *depth, PyObject **out) {
    OneOf oneof = {NULL, (intptr_t)depth, 0};
    int status = oneof.depth > MAX_DEPTH ? DECLINE : each_field(reader, any_value_field, &oneof);
    if (status != 0) {
        Py_XDECREF(oneof.value);
        return status;
    }
    *out = oneof.value != NULL ? oneof.value : Py_NewRef(Py_None);
    return 0;
}

/* LogRecord; `base` is the start of the request, to locate the record's bytes. */
typedef struct {
    uint64_t time, observed, severity;
    PyObject *severity_text, *event_name, *attributes, *body;
    Reader trace_id, span_id;
} Record;

static int record_field(Reader *reader, uint32_t field, int wire, void *state) {
    Record *record = state;
    Reader inner;
    if (wire == FIXED64 && (field == 1 || field == 11)) {
        return read_fixed64(reader, field == 1 ? &record->time : &record->observed);
    }
    if (field == 2 && wire == VARINT) {
        /* an enum protobuf keeps as int32: decline what it would truncate or make negative */
        return read_varint(reader, &record->severity) != 0 || record->severity > INT32_MAX ? DECLINE : 0;
    }
    if (wire != LEN) {
        return UNHANDLED;
    }
    switch (field) {
    case 3:
        return read_text(reader, &record->severity_text);
    case 12:
        return read_text(reader, &record->event_name);
    case 5:
        if (record->body != NULL || read_len(reader, &inner) != 0) {  /* protobuf would merge two bodies */
            return DECLINE;
        }
        return any_value(inner, (void *)0, &record->body);
    case 6:
        return key_value(reader, record->attributes, 0);
    case 9:
        return read_len(reader, &record->trace_id);
    case 10:
        return read_len(reader, &record->span_id);
    default:
        return UNHANDLED;
    }
}

/* LogRecord -> (time, observed time, severity number, severity text, event name, attributes, body,
 * trace id hex, span id hex, start, end): start and end locate the record's bytes in the request. */
static int log_record(Reader reader, void *base, PyObject **out) {
    Record record = {0, 0, 0, NULL, NULL, PyDict_New(), NULL, {reader.at, reader.at}, {reader.at, reader.at}};
    int status = record.attributes == NULL ? -1 : each_field(reader, record_field, &record);
    if (status == 0) {
        PyObject *empty = PyUnicode_New(0, 0);
        PyObject *trace_hex = hex_text(&record.trace_id);
        PyObject *span_hex = hex_text(&record.span_id);
        if (empty == NULL || trace_hex == NULL || span_hex == NULL) {
            status = -1;
        } else {
            *out = Py_BuildValue(
                "(KKiOOOOOOnn)", (unsigned long long)record.time, (unsigned long long)record.observed,
                (int)record.severity, record.severity_text ? record.severity_text : empty,
                record.event_name ? record.event_name : empty, record.attributes,
                record.body ? record.body : Py_None, trace_hex, span_hex, (Py_ssize_t)(reader.at - (uint8_t *)base),
                (Py_ssize_t)(reader.end - (uint8_t *)base));
            status = *out == NULL ? -1 : 0;
        }
        Py_XDECREF(empty);
        Py_XDECREF(trace_hex);
        Py_XDECREF(span_hex);
    }
    Py_XDECREF(record.severity_text);
    Py_XDECREF(record.event_name);
    Py_XDECREF(record.attributes);
    Py_XDECREF(record.body);
    return status;
}

/* InstrumentationScope: name and version (attributes are checked, not kept). */
typedef struct {
    PyObject *name, *version;
} Scope;

static int scope_field(Reader *reader, uint32_t field, int wire, void *state) {
    Scope *scope = state;
    if (wire != LEN) {
        return UNHANDLED;
    }
    if (field == 1 || field == 2) {
        return read_text(reader, field == 1 ? &scope->name : &scope->version);
    }
    if (field == 3) {
        PyObject *ignored = PyDict_New();
        int status = ignored == NULL ? -1 : key_value(reader, ignored, 0);
        Py_XDECREF(ignored);
        return status;
    }
    return UNHANDLED;
}

/* ScopeLogs and ResourceLogs: their one message field (scope, resource), their repeated field (records, scope
 * logs) and schema_url. */
typedef struct {
    FieldHandler own;  /* the fields of the one message */
    void *own_state;
    int own_seen;
    PyObject *items;
    Decoder item;
    void *base;
} Parent;

static int parent_field(Reader *reader, uint32_t field, int wire, void *state) {
    Parent *parent = state;
    Reader inner;
    if (wire != LEN) {
        return UNHANDLED;
    }
    switch (field) {
    case 1:  /* given twice, protobuf would merge the two */
        if (parent->own_seen++ || read_len(reader, &inner) != 0) {
            return DECLINE;
        }
        return each_field(inner, parent->own, parent->own_state);
    case 2:
        return append_decoded(reader, parent->items, parent->item, parent->base);
    case 3: {
        PyObject *text = NULL;
        int status = read_text(reader, &text);
        Py_XDECREF(text);
        return status;
    }
    default:
        return UNHANDLED;
    }
}

/* ScopeLogs -> (scope name, scope version, [record, ...]). */
static int scope_logs(Reader reader, void *base, PyObject **out) {
    Scope scope = {NULL, NULL};
    Parent parent = {scope_field, &scope, 0, PyList_New(0), log_record, base};
    int status = parent.items == NULL ? -1 : each_field(reader, parent_field, &parent);
    if (status == 0) {
        PyObject *empty = PyUnicode_New(0, 0);
        *out = empty == NULL ? NULL
                             : Py_BuildValue("(OOO)", scope.name ? scope.name : empty,
                                             scope.version ? scope.version : empty, parent.items);
        Py_XDECREF(empty);
        status = *out == NULL ? -1 : 0;
    }
    Py_XDECREF(scope.name);
    Py_XDECREF(scope.version);
    Py_XDECREF(parent.items);
    return status;
}

/* Resource: its attributes (entity references are declined). */
static int resource_field(Reader *reader, uint32_t field, int wire, void *state) {
    if (field == 1 && wire == LEN) {
        return key_value(reader, state, 0);
    }
    return field == 3 && wire == LEN ? DECLINE : UNHANDLED;
}

/* ResourceLogs -> (resource attributes, [scope logs, ...]). */
static int resource_logs(Reader reader, void *base, PyObject **out) {
    PyObject *attributes = PyDict_New();
    Parent parent = {resource_field, attributes, 0, PyList_New(0), scope_logs, base};
    int status = attributes == NULL || parent.items == NULL ? -1 : each_field(reader, parent_field, &parent);
    if (status == 0) {
        *out = PyTuple_Pack(2, attributes, parent.items);
        status = *out == NULL ? -1 : 0;
    }
    Py_XDECREF(attributes);
    Py_XDECREF(parent.items);
    return status;
}

/* ExportLogsServiceRequest: its repeated resource_logs. */
static int request_field(Reader *reader, uint32_t field, int wire, void *state) {
    Parent *request = state;
    return field == 1 && wire == LEN ? append_decoded(reader, request->items, resource_logs, request->base) : UNHANDLED;
}

static PyObject *decode_logs(PyObject *module, PyObject *arg) {
    (void)module;
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    Reader reader = {view.buf, (const uint8_t *)view.buf + view.len};
    Parent request = {NULL, NULL, 0, PyList_New(0), NULL, view.buf};
    int status = request.items == NULL ? -1 : each_field(reader, request_field, &request);
    PyBuffer_Release(&view);
    if (status != 0) {
        Py_XDECREF(request.items);
        if (status < 0) {
            return NULL;
        }
        Py_RETURN_NONE;
    }
    return request.items;
}

/* plain_audit_attributes: the fast yes of otlp.check_audit_attributes. True only for a decoded attribute map that
 * check accepts, built of exact builtin types (what decode_logs produces); False for anything else, whether check
 * would refuse it or only this declines it (a changes or metadata map that is not a dict, a value of another type,
 * an action ending in a newline), and check then decides and names the field. The attribute names and limits come
 * from otlp.py in a tuple (otlp._CHECK_SPEC, in this order), so no convention is written twice. */
enum {
    SPEC_ACTION, SPEC_OUTCOME, SPEC_OUTCOMES, SPEC_EVENT_STRINGS, SPEC_REASON, SPEC_ACTOR_TYPE, SPEC_USER_ID,
    SPEC_ACTOR_TYPES, SPEC_ACTOR_STRINGS, SPEC_ROLES, SPEC_RESOURCE_TYPE, SPEC_RESOURCE_STRINGS, SPEC_STATUS,
    SPEC_CHANGES, SPEC_METADATA, SPEC_MAX_COLUMN, SPEC_MAX_REASON, SPEC_MAX_NAME, SPEC_MAX_DEPTH, SPEC_SIZE
};

typedef struct {
    PyObject *items[SPEC_SIZE];
    Py_ssize_t max_column, max_reason, max_name, max_depth;
} Spec;

static int value_plain(PyObject *value, Py_ssize_t depth, const Spec *spec);

/* Every value of a dict or item of a list plain (1) or not (0), as otlp._nested_ok has it. */
static int nested_plain(PyObject *container, Py_ssize_t depth, const Spec *spec) {
    if (PyDict_CheckExact(container)) {
        Py_ssize_t position = 0;
        PyObject *key, *item;
        while (PyDict_Next(container, &position, &key, &item)) {
            if (!value_plain(item, depth + 1, spec)) {
                return 0;
            }
        }
        return 1;
    }
    for (Py_ssize_t index = 0; index < PyList_GET_SIZE(container); index++) {
        if (!value_plain(PyList_GET_ITEM(container, index), depth + 1, spec)) {
            return 0;
        }
    }
    return 1;
}

/* A str, int, bool, None, bytes or finite float, or a dict or list below the depth limit holding only such. */
static int value_plain(PyObject *value, Py_ssize_t depth, const Spec *spec) {
    if (PyUnicode_CheckExact(value) || PyLong_CheckExact(value) || PyBool_Check(value) || value == Py_None ||
        PyBytes_CheckExact(value)) {
        return 1;
    }
    if (PyFloat_CheckExact(value)) {
        double number = PyFloat_AS_DOUBLE(value);
        return number - number == 0.0;
    }
    if (PyDict_CheckExact(value) || PyList_CheckExact(value)) {
        return depth < spec->max_depth && nested_plain(value, depth, spec);
    }
    return 0;
}

static int short_text(PyObject *value, Py_ssize_t max_length) {
    return PyUnicode_CheckExact(value) && PyUnicode_GET_LENGTH(value) <= max_length;
}

/* Each named attribute absent, None, or a string of at most max_length characters. */
static int strings_plain(PyObject *attributes, PyObject *names, Py_ssize_t max_length) {
    for (Py_ssize_t index = 0; index < PyTuple_GET_SIZE(names); index++) {
        PyObject *value = PyDict_GetItemWithError(attributes, PyTuple_GET_ITEM(names, index));
        if (value == NULL && PyErr_Occurred()) {
            return -1;
        }
        if (value != NULL && value != Py_None && !short_text(value, max_length)) {
            return 0;
        }
    }
    return 1;
}

static int word_char(unsigned char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
}

/* Lower-case dotted words: [a-z][a-z0-9_-]* then one or more .[a-z0-9][a-z0-9_-]* (otlp._ACTION_RE). */
static int action_plain(PyObject *action, Py_ssize_t max_length) {
    if (!short_text(action, max_length) || !PyUnicode_IS_ASCII(action)) {
        return 0;
    }
    const unsigned char *text = PyUnicode_1BYTE_DATA(action);
    Py_ssize_t length = PyUnicode_GET_LENGTH(action), dots = 0;
    if (length == 0 || !(text[0] >= 'a' && text[0] <= 'z')) {
        return 0;
    }
    for (Py_ssize_t index = 1; index < length; index++) {
        if (text[index] == '.') {
            if (index + 1 >= length || !word_char(text[index + 1]) || text[index + 1] == '_' || text[index + 1] == '-') {
                return 0;
            }
            dots++;
        } else if (!word_char(text[index])) {
            return 0;
        }
    }
    return dots > 0;
}

#define GET(name, into)                                                     \
    PyObject *into = PyDict_GetItemWithError(attributes, spec.items[name]); \
    if (into == NULL && PyErr_Occurred()) {                                 \
        return -1;                                                          \
    }

static int audit_plain(PyObject *attributes, const Spec spec) {
    int verdict;
    GET(SPEC_ACTION, action)
    if (action == NULL || !action_plain(action, spec.max_name)) {
        return 0;
    }
    GET(SPEC_OUTCOME, outcome)
    if (outcome != NULL && !(PyUnicode_CheckExact(outcome) && PySet_Contains(spec.items[SPEC_OUTCOMES], outcome) == 1)) {
        return 0;
    }
    if ((verdict = strings_plain(attributes, spec.items[SPEC_EVENT_STRINGS], spec.max_column)) != 1) {
        return verdict;
    }
    GET(SPEC_REASON, reason)
    if (reason != NULL && reason != Py_None && !short_text(reason, spec.max_reason)) {
        return 0;
    }
    GET(SPEC_ACTOR_TYPE, actor_type)
    GET(SPEC_USER_ID, user_id)
    if (actor_type != NULL || user_id != NULL) {
        /* absent, the type is check's default ("user"), one of the types */
        if (actor_type != NULL &&
            !(PyUnicode_CheckExact(actor_type) && PySet_Contains(spec.items[SPEC_ACTOR_TYPES], actor_type) == 1)) {
            return 0;
        }
        if ((verdict = strings_plain(attributes, spec.items[SPEC_ACTOR_STRINGS], spec.max_column)) != 1) {
            return verdict;
        }
        GET(SPEC_ROLES, roles)
        if (roles != NULL && roles != Py_None) {
            if (!PyList_CheckExact(roles)) {
                return 0;
            }
            for (Py_ssize_t index = 0; index < PyList_GET_SIZE(roles); index++) {
                PyObject *role = PyList_GET_ITEM(roles, index);
                if (!short_text(role, spec.max_column) || PyUnicode_GET_LENGTH(role) == 0) {
                    return 0;
                }
            }
        }
    }
    GET(SPEC_RESOURCE_TYPE, resource_type)
    if (resource_type != NULL) {
        if (!short_text(resource_type, spec.max_name) || PyUnicode_GET_LENGTH(resource_type) == 0) {
            return 0;
        }
        if ((verdict = strings_plain(attributes, spec.items[SPEC_RESOURCE_STRINGS], spec.max_column)) != 1) {
            return verdict;
        }
    }
    GET(SPEC_STATUS, status)
    if (status != NULL && status != Py_None) {
        int overflow = 0;
        long code = PyLong_CheckExact(status) ? PyLong_AsLongAndOverflow(status, &overflow) : 0;
        if (overflow || code < 100 || code > 599) {
            return 0;
        }
    }
    GET(SPEC_CHANGES, changes)
    if (changes != NULL && changes != Py_None) {
        if (!PyDict_CheckExact(changes)) {
            return 0;
        }
        Py_ssize_t position = 0;
        PyObject *name, *change;
        while (PyDict_Next(changes, &position, &name, &change)) {
            if (!PyUnicode_CheckExact(name) || PyUnicode_GET_LENGTH(name) == 0 || !PyDict_CheckExact(change)) {
                return 0;
            }
            for (int side = 0; side < 2; side++) {
                PyObject *value = PyDict_GetItemString(change, side == 0 ? "old" : "new");
                if (value != NULL && !value_plain(value, 0, &spec)) {
                    return 0;
                }
            }
        }
    }
    GET(SPEC_METADATA, metadata)
    if (metadata != NULL && metadata != Py_None) {
        return PyDict_CheckExact(metadata) && value_plain(metadata, 0, &spec);
    }
    return 1;
}

static int read_spec(PyObject *tuple, Spec *spec) {
    if (!PyTuple_CheckExact(tuple) || PyTuple_GET_SIZE(tuple) != SPEC_SIZE) {
        PyErr_SetString(PyExc_TypeError, "plain_audit_attributes: the spec must be a tuple in otlp._CHECK_SPEC's order");
        return -1;
    }
    for (int index = 0; index < SPEC_SIZE; index++) {
        spec->items[index] = PyTuple_GET_ITEM(tuple, index);
    }
    Py_ssize_t *numbers[] = {&spec->max_column, &spec->max_reason, &spec->max_name, &spec->max_depth};
    for (int index = 0; index < 4; index++) {
        *numbers[index] = PyLong_AsSsize_t(spec->items[SPEC_MAX_COLUMN + index]);
        if (*numbers[index] == -1 && PyErr_Occurred()) {
            return -1;
        }
    }
    int sets = PyFrozenSet_CheckExact(spec->items[SPEC_OUTCOMES]) && PyFrozenSet_CheckExact(spec->items[SPEC_ACTOR_TYPES]);
    int names = PyTuple_CheckExact(spec->items[SPEC_EVENT_STRINGS]) && PyTuple_CheckExact(spec->items[SPEC_ACTOR_STRINGS]) &&
                PyTuple_CheckExact(spec->items[SPEC_RESOURCE_STRINGS]);
    if (!sets || !names) {
        PyErr_SetString(PyExc_TypeError, "plain_audit_attributes: the spec's value sets are frozensets, its name lists tuples");
        return -1;
    }
    return 0;
}

static PyObject *plain_audit_attributes(PyObject *module, PyObject *const *args, Py_ssize_t count) {
    (void)module;
    Spec spec;
    if (count != 2) {
        PyErr_SetString(PyExc_TypeError, "plain_audit_attributes(attributes, spec)");
        return NULL;
    }
    if (read_spec(args[1], &spec) < 0) {
        return NULL;
    }
    if (!PyDict_CheckExact(args[0])) {
        Py_RETURN_FALSE;
    }
    int verdict = audit_plain(args[0], spec);
    if (verdict < 0) {
        return NULL;
    }
    return PyBool_FromLong(verdict);
}

static PyMethodDef methods[] = {
    {"decode_logs", decode_logs, METH_O,
     "decode_logs(data) -> [(resource attributes, [(scope name, scope version, [record, ...]), ...]), ...] or None "
     "when protobuf must decode the request (see otlp.decoded_request)."},
    {"plain_audit_attributes", (PyCFunction)(void (*)(void))plain_audit_attributes, METH_FASTCALL,
     "plain_audit_attributes(attributes, spec) -> bool: True only when otlp.check_audit_attributes accepts the "
     "decoded attributes; False: let it decide (and name the field)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_definition = {
    PyModuleDef_HEAD_INIT, "_otlp", "Compiled OTLP logs request decoding for the store (see store/otlp.py).", -1,
    methods,
};

PyMODINIT_FUNC PyInit__otlp(void) {
    return PyModule_Create(&module_definition);
}
