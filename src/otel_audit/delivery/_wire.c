/* The OTLP wire encoding of a log record and the spool's record frame, compiled: the measured hot path of emit.
 *
 * encoder.py and spool.py are the reference; this module writes the same bytes for the plain values audit
 * records carry (exact str, int, bool, float, None, bytes, list, tuple and dict with str keys) and answers None
 * for anything else, so encoder.py encodes that record itself. The record's fields are read first; while a
 * container is then encoded no Python code runs (exact types only), so it cannot change under the encoder.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <errno.h>
#include <string.h>
#include <unistd.h>
#include <fcntl.h>
#include <sys/mman.h>

#define UNSUPPORTED 1
#define MAX_DEPTH 64

typedef struct {
    char *data;
    Py_ssize_t len;
    Py_ssize_t cap;
} Buffer;

static int reserve(Buffer *buffer, Py_ssize_t extra) {
    if (buffer->len + extra <= buffer->cap) {
        return 0;
    }
    Py_ssize_t cap = buffer->cap * 2;
    while (cap < buffer->len + extra) {
        cap *= 2;
    }
    char *data = PyMem_Realloc(buffer->data, (size_t)cap);
    if (data == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    buffer->data = data;
    buffer->cap = cap;
    return 0;
}

static int varint_size(uint64_t value) {
    return 1 + (63 - __builtin_clzll(value | 1)) / 7; /* 7 bits a byte */
}

/* Write `value` as a varint at `out`; returns the byte after it. */
static char *write_varint(char *out, uint64_t value) {
    while (value >= 0x80) {
        *out++ = (char)((value & 0x7F) | 0x80);
        value >>= 7;
    }
    *out++ = (char)value;
    return out;
}

static int put_varint(Buffer *buffer, uint64_t value) {
    int size = varint_size(value);
    if (reserve(buffer, size) < 0) {
        return -1;
    }
    write_varint(buffer->data + buffer->len, value);
    buffer->len += size;
    return 0;
}

static int put_bytes(Buffer *buffer, const char *bytes, Py_ssize_t size) {
    if (reserve(buffer, size) < 0) {
        return -1;
    }
    memcpy(buffer->data + buffer->len, bytes, (size_t)size);
    buffer->len += size;
    return 0;
}

static int put_byte(Buffer *buffer, char byte) {
    if (reserve(buffer, 1) < 0) {
        return -1;
    }
    buffer->data[buffer->len++] = byte;
    return 0;
}

/* A str's UTF-8 bytes: an ASCII string's own data, else PyUnicode_AsUTF8AndSize's (cached on the string). */
static const char *utf8_of(PyObject *text, Py_ssize_t *size) {
    if (PyUnicode_IS_COMPACT_ASCII(text)) {
        *size = PyUnicode_GET_LENGTH(text);
        return (const char *)PyUnicode_DATA(text);
    }
    return PyUnicode_AsUTF8AndSize(text, size);
}

/* Turn the bytes written since `start` into a length-delimited field: tag and length go in front of them. */
static int delimit(Buffer *buffer, char tag, Py_ssize_t start) {
    Py_ssize_t size = buffer->len - start;
    int prefix = 1 + varint_size((uint64_t)size);
    if (reserve(buffer, prefix) < 0) {
        return -1;
    }
    char *at = buffer->data + start;
    memmove(at + prefix, at, (size_t)size);
    at[0] = tag;
    write_varint(at + 1, (uint64_t)size);
    buffer->len += prefix;
    return 0;
}

static int put_string_field(Buffer *buffer, char tag, PyObject *text) {
    Py_ssize_t size;
    const char *utf8 = utf8_of(text, &size);
    if (utf8 == NULL) {
        return -1;
    }
    if (put_byte(buffer, tag) < 0 || put_varint(buffer, (uint64_t)size) < 0) {
        return -1;
    }
    return put_bytes(buffer, utf8, size);
}

static int any_value(Buffer *buffer, PyObject *value, int depth);
static int key_value(Buffer *buffer, PyObject *key, PyObject *value, int depth);

/* A KeyValue field (`tag`) whose value is a string, the common attribute: every length is known before writing,
 * so the bytes are written once, in place (key_value and delimit would move them to fit each length in front). */
static int string_key_value(Buffer *buffer, char tag, PyObject *key, PyObject *value) {
    Py_ssize_t key_size, value_size;
    const char *key_utf8 = utf8_of(key, &key_size);
    const char *value_utf8 = key_utf8 == NULL ? NULL : utf8_of(value, &value_size);
    if (value_utf8 == NULL) {
        return -1;
    }
    uint64_t any_size = 1 + (uint64_t)varint_size((uint64_t)value_size) + (uint64_t)value_size;
    uint64_t key_part = key_size > 0 ? 1 + (uint64_t)varint_size((uint64_t)key_size) + (uint64_t)key_size : 0;
    uint64_t pair_size = key_part + 1 + (uint64_t)varint_size(any_size) + any_size;
    if (reserve(buffer, (Py_ssize_t)(1 + varint_size(pair_size) + pair_size)) < 0) {
        return -1;
    }
    char *out = buffer->data + buffer->len; /* room for all of it was reserved above */
    *out++ = tag;
    out = write_varint(out, pair_size);
    if (key_size > 0) {
        *out++ = 0x0a;
        out = write_varint(out, (uint64_t)key_size);
        memcpy(out, key_utf8, (size_t)key_size);
        out += key_size;
    }
    *out++ = 0x12;
    out = write_varint(out, any_size);
    *out++ = 0x0a;
    out = write_varint(out, (uint64_t)value_size);
    memcpy(out, value_utf8, (size_t)value_size);
    buffer->len = out + value_size - buffer->data;
    return 0;
}

/* One KeyValue field (`tag`) of a map, at `depth`. */
static int key_value_field(Buffer *buffer, char tag, PyObject *key, PyObject *value, int depth) {
    if (PyUnicode_CheckExact(key) && PyUnicode_CheckExact(value)) {
        return string_key_value(buffer, tag, key, value);
    }
    Py_ssize_t start = buffer->len;
    int status = key_value(buffer, key, value, depth);
    return status != 0 ? status : delimit(buffer, tag, start);
}

/* A KeyValue message's fields: key (left out when empty, as proto3 does) and the AnyValue, always present. */
static int key_value(Buffer *buffer, PyObject *key, PyObject *value, int depth) {
    if (!PyUnicode_CheckExact(key)) {
        return UNSUPPORTED;
    }
    if (PyUnicode_GET_LENGTH(key) > 0 && put_string_field(buffer, 0x0a, key) < 0) {
        return -1;
    }
    Py_ssize_t start = buffer->len;
    int status = any_value(buffer, value, depth + 1);
    if (status != 0) {
        return status;
    }
    return delimit(buffer, 0x12, start);
}

/* An AnyValue message's fields (None: no field at all, the empty AnyValue the SDK writes too). */
static int any_value(Buffer *buffer, PyObject *value, int depth) {
    if (depth > MAX_DEPTH) {
        return UNSUPPORTED;
    }
    if (PyUnicode_CheckExact(value)) {
        return put_string_field(buffer, 0x0a, value);
    }
    if (value == Py_None) {
        return 0;
    }
    if (PyBool_Check(value)) {
        return put_byte(buffer, 0x10) < 0 ? -1 : put_byte(buffer, value == Py_True ? 1 : 0);
    }
    if (PyLong_CheckExact(value)) {
        int overflow = 0;
        long long number = PyLong_AsLongLongAndOverflow(value, &overflow);
        if (overflow != 0) {
            return UNSUPPORTED;
        }
        if (number == -1 && PyErr_Occurred()) {
            return -1;
        }
        /* int64 as protobuf writes it: negatives as their 64-bit two's complement (ten bytes) */
        return put_byte(buffer, 0x18) < 0 ? -1 : put_varint(buffer, (uint64_t)number);
    }
    if (PyFloat_CheckExact(value)) {
#if PY_BIG_ENDIAN
        return UNSUPPORTED;
#else
        double number = PyFloat_AS_DOUBLE(value);
        if (put_byte(buffer, 0x21) < 0) {
            return -1;
        }
        return put_bytes(buffer, (const char *)&number, 8);
#endif
    }
    if (PyBytes_CheckExact(value)) {
        Py_ssize_t size = PyBytes_GET_SIZE(value);
        if (put_byte(buffer, 0x3a) < 0 || put_varint(buffer, (uint64_t)size) < 0) {
            return -1;
        }
        return put_bytes(buffer, PyBytes_AS_STRING(value), size);
    }
    if (PyList_CheckExact(value) || PyTuple_CheckExact(value)) {
        Py_ssize_t outer = buffer->len;
        Py_ssize_t count = PySequence_Fast_GET_SIZE(value);
        PyObject **items = PySequence_Fast_ITEMS(value);
        for (Py_ssize_t index = 0; index < count; index++) {
            Py_ssize_t start = buffer->len;
            int status = any_value(buffer, items[index], depth + 1);
            if (status != 0) {
                return status;
            }
            if (delimit(buffer, 0x0a, start) < 0) {
                return -1;
            }
        }
        return delimit(buffer, 0x2a, outer);
    }
    if (PyDict_CheckExact(value)) {
        Py_ssize_t outer = buffer->len;
        Py_ssize_t position = 0;
        PyObject *key, *item;
        while (PyDict_Next(value, &position, &key, &item)) {
            int status = key_value_field(buffer, 0x0a, key, item, depth);
            if (status != 0) {
                return status;
            }
        }
        return delimit(buffer, 0x32, outer);
    }
    return UNSUPPORTED;
}

static PyObject *finish(Buffer *buffer, int status) {
    PyObject *result = NULL;
    if (status == 0) {
        result = PyBytes_FromStringAndSize(buffer->data, buffer->len);
    } else if (status == UNSUPPORTED) {
        result = Py_NewRef(Py_None);
    }
    PyMem_Free(buffer->data);
    return result;
}

static int start(Buffer *buffer) {
    buffer->len = 0;
    buffer->cap = 1024;
    buffer->data = PyMem_Malloc((size_t)buffer->cap);
    if (buffer->data == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

static int put_fixed64(Buffer *buffer, char tag, uint64_t value) {
    char bytes[9];
    bytes[0] = tag;
    for (int index = 0; index < 8; index++) {
        bytes[1 + index] = (char)(value >> (8 * index));
    }
    return put_bytes(buffer, bytes, 9);
}

static int put_big_endian(Buffer *buffer, uint64_t value) {
    char bytes[8];
    for (int index = 0; index < 8; index++) {
        bytes[index] = (char)(value >> (56 - 8 * index));
    }
    return put_bytes(buffer, bytes, 8);
}

/* An unsigned field value that fits in 64 bits: 0 and *out set, UNSUPPORTED (no exception) otherwise. */
static int unsigned_of(PyObject *value, uint64_t *out) {
    if (!PyLong_Check(value)) {
        return UNSUPPORTED;
    }
    unsigned long long number = PyLong_AsUnsignedLongLong(value);
    if (number == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Clear();
        return UNSUPPORTED;
    }
    *out = number;
    return 0;
}

/* Python truthiness for the "field set?" tests of encoder.py: 1, 0, or -1 with an exception. */
static int truth(PyObject *value) {
    if (value == Py_None) {
        return 0;
    }
    return PyObject_IsTrue(value);
}

static PyObject *name_value, *name_timestamp, *name_observed, *name_severity_number, *name_severity_text, *name_body,
    *name_attributes, *name_trace_flags, *name_trace_id, *name_span_id, *name_event_name;

#define LOG_FIELDS 10

/* The `value` of the Enum members met so far (SeverityNumber's, in practice): an Enum member's value never changes,
 * and reading the property is a Python-level call per record. The members stay referenced, so a cached pointer is
 * never another object's. */
#define MEMBER_CACHE 32
static PyObject *enum_type;
static PyObject *cached_members[MEMBER_CACHE], *cached_values[MEMBER_CACHE];
static int cached_count;

/* `member.value`, a new reference; NULL with the error set when it has none. */
static PyObject *member_value_of(PyObject *member) {
    for (int index = 0; index < cached_count; index++) {
        if (cached_members[index] == member) {
            return Py_NewRef(cached_values[index]);
        }
    }
    PyObject *value = PyObject_GetAttr(member, name_value);
    if (value != NULL && cached_count < MEMBER_CACHE && PyType_IsSubtype(Py_TYPE(member), (PyTypeObject *)enum_type)) {
        cached_members[cached_count] = Py_NewRef(member);
        cached_values[cached_count] = Py_NewRef(value);
        cached_count++;
    }
    return value;
}

/* The SDK's attribute container (opentelemetry.attributes.BoundedAttributes), set by encoder.py; NULL until then. */
static PyObject *bounded_attributes;
static PyObject *name_dict_, *name_dropped;

/* The items and dropped count of a BoundedAttributes, as encoder.py reads them through its mapping interface (its
 * `_dict`, in order, and `dropped`): 0 with a new reference in `items`, or UNSUPPORTED when they are not an exact
 * dict and an unsigned 64-bit int (encoder.py then reads the container itself). */
static int bounded_items(PyObject *attributes, PyObject **items, unsigned long long *dropped) {
    PyObject *found = PyObject_GetAttr(attributes, name_dict_);
    PyObject *count = found == NULL ? NULL : PyObject_GetAttr(attributes, name_dropped);
    int status = UNSUPPORTED;
    if (count != NULL && PyDict_CheckExact(found) && PyLong_CheckExact(count)) {
        *dropped = PyLong_AsUnsignedLongLong(count);
        if (!PyErr_Occurred()) {
            *items = Py_NewRef(found);
            status = 0;
        }
    }
    PyErr_Clear(); /* a missing attribute or a count out of range: encoder.py's answer */
    Py_XDECREF(found);
    Py_XDECREF(count);
    return status;
}

/* One LogRecord message from its field values (borrowed), given in field-number order: timestamp, severity number,
 * severity text, body, attributes, trace flags, trace id, span id, observed timestamp, event name (encoder.py's
 * encode_log_record, in C). */
static int log_record_fields(Buffer *buffer, PyObject *const *fields) {
    PyObject *timestamp = fields[0], *number = fields[1], *text = fields[2], *body = fields[3],
             *attributes = fields[4], *flags = fields[5], *trace_id = fields[6], *span_id = fields[7],
             *observed = fields[8], *event_name = fields[9];
    PyObject *member_value = NULL, *bounded_items_dict = NULL;
    int status = 0;
    uint64_t value = 0;
    if ((status = truth(timestamp)) == 1) {
        if ((status = unsigned_of(timestamp, &value)) != 0 || (status = put_fixed64(buffer, 0x09, value)) != 0) {
            goto done;
        }
    } else if (status < 0) {
        goto done;
    }
    if (number != Py_None) {
        if (!PyLong_Check(number)) { /* SeverityNumber is an Enum of ints: its `value` (as encoder.py reads it) */
            member_value = member_value_of(number);
            if (member_value == NULL) {
                PyErr_Clear();
                status = UNSUPPORTED;
                goto done;
            }
            number = member_value;
        }
        if (!PyLong_Check(number)) {
            status = UNSUPPORTED;
            goto done;
        }
        long long severity = PyLong_AsLongLong(number);
        if (severity == -1 && PyErr_Occurred()) {
            PyErr_Clear();
            status = UNSUPPORTED;
            goto done;
        }
        if (severity != 0 && (put_byte(buffer, 0x10) < 0 || put_varint(buffer, (uint64_t)severity) < 0)) {
            status = -1;
            goto done;
        }
    }
    if (text != Py_None) {
        if (!PyUnicode_CheckExact(text)) {
            status = UNSUPPORTED;
            goto done;
        }
        if (PyUnicode_GET_LENGTH(text) > 0 && put_string_field(buffer, 0x1a, text) < 0) {
            status = -1;
            goto done;
        }
    }
    if (body != Py_None) {
        Py_ssize_t start = buffer->len;
        if ((status = any_value(buffer, body, 0)) != 0 || (status = delimit(buffer, 0x2a, start)) != 0) {
            goto done;
        }
    }
    if (attributes != Py_None) {
        unsigned long long dropped = 0;
        if (bounded_attributes != NULL && Py_IS_TYPE(attributes, (PyTypeObject *)bounded_attributes)) {
            if ((status = bounded_items(attributes, &bounded_items_dict, &dropped)) != 0) {
                goto done;
            }
            attributes = bounded_items_dict;
        }
        if (!PyDict_CheckExact(attributes)) { /* other mappings: encoder.py */
            status = UNSUPPORTED;
            goto done;
        }
        Py_ssize_t position = 0;
        PyObject *key, *item;
        while (PyDict_Next(attributes, &position, &key, &item)) {
            if ((status = key_value_field(buffer, 0x32, key, item, 0)) != 0) {
                goto done;
            }
        }
        if (dropped > 0 && PyDict_GET_SIZE(attributes) > 0 /* encoder.py counts the drops of a non-empty container */
            && (put_byte(buffer, 0x38) < 0 || put_varint(buffer, dropped) < 0)) {
            status = -1;
            goto done;
        }
    }
    if ((status = truth(flags)) < 0) {
        goto done;
    }
    if (status == 1) {
        if ((status = unsigned_of(flags, &value)) != 0 || value > 0xFFFFFFFFULL) {
            status = UNSUPPORTED;
            goto done;
        }
        char bytes[5] = {0x45, (char)value, (char)(value >> 8), (char)(value >> 16), (char)(value >> 24)};
        if (put_bytes(buffer, bytes, 5) < 0) {
            status = -1;
            goto done;
        }
    }
    if ((status = truth(trace_id)) == 1) {
        uint64_t high = 0;
        PyObject *shift = PyLong_FromLong(64);
        PyObject *shifted = shift != NULL && PyLong_Check(trace_id) ? PyNumber_Rshift(trace_id, shift) : NULL;
        Py_XDECREF(shift);
        if (shifted == NULL) {
            PyErr_Clear();
            status = UNSUPPORTED;
            goto done;
        }
        status = unsigned_of(shifted, &high); /* a negative id or one past 128 bits: encoder.py raises for it */
        Py_DECREF(shifted);
        if (status != 0) {
            goto done;
        }
        uint64_t low = PyLong_AsUnsignedLongLongMask(trace_id);
        if (put_byte(buffer, 0x4a) < 0 || put_byte(buffer, 0x10) < 0 || put_big_endian(buffer, high) < 0
            || put_big_endian(buffer, low) < 0) {
            status = -1;
            goto done;
        }
    } else if (status < 0) {
        goto done;
    }
    if ((status = truth(span_id)) < 0) {
        goto done;
    }
    if (status == 1) {
        if ((status = unsigned_of(span_id, &value)) != 0) {
            goto done;
        }
        if (put_byte(buffer, 0x52) < 0 || put_byte(buffer, 0x08) < 0 || put_big_endian(buffer, value) < 0) {
            status = -1;
            goto done;
        }
    }
    if ((status = truth(observed)) < 0) {
        goto done;
    }
    if (status == 1) {
        if ((status = unsigned_of(observed, &value)) != 0 || (status = put_fixed64(buffer, 0x59, value)) != 0) {
            goto done;
        }
    }
    if ((status = truth(event_name)) < 0) {
        goto done;
    }
    if (status == 1) {
        status = 0;
        if (!PyUnicode_CheckExact(event_name)) {
            status = UNSUPPORTED;
            goto done;
        }
        if (put_string_field(buffer, 0x62, event_name) < 0) {
            status = -1;
        }
    }
done:
    Py_XDECREF(member_value);
    Py_XDECREF(bounded_items_dict);
    return status;
}

/* The LogRecord message of an API log record, read field by field. */
static int log_record(Buffer *buffer, PyObject *log) {
    PyObject *fields[LOG_FIELDS] = {NULL};
    PyObject *names[LOG_FIELDS] = {name_timestamp, name_severity_number, name_severity_text, name_body,
                                   name_attributes, name_trace_flags, name_trace_id, name_span_id, name_observed,
                                   name_event_name};
    int status = 0;
    for (int index = 0; index < LOG_FIELDS && status == 0; index++) {
        fields[index] = PyObject_GetAttr(log, names[index]);
        if (fields[index] == NULL) {
            status = -1;
        }
    }
    if (status == 0) {
        status = log_record_fields(buffer, fields);
    }
    for (int index = 0; index < LOG_FIELDS; index++) {
        Py_XDECREF(fields[index]);
    }
    return status;
}

PyDoc_STRVAR(encode_log_record_doc,
"encode_log_record(log: opentelemetry._logs.LogRecord) -> bytes | None\n\n"
"The OTLP LogRecord message of an API log record, exactly as encoder.encode_log_record writes it, or None when\n"
"a field holds something this module does not encode (encoder.py then encodes the record).");

static PyObject *encode_log_record(PyObject *module, PyObject *log) {
    Buffer buffer;
    if (start(&buffer) < 0) {
        return NULL;
    }
    return finish(&buffer, log_record(&buffer, log));
}

/* The LogRecord fields, in the order log_record_fields takes them, of a record given in the direct stages' order:
 * timestamp, observed timestamp, severity number, severity text, attributes, event name, trace id, span id, trace
 * flags (no body). */
static void fields_of_parts(PyObject *const *parts, PyObject **fields) {
    static const int part_of_field[LOG_FIELDS] = {0, 2, 3, -1, 4, 8, 6, 7, 1, 5}; /* -1: the body, never given */
    for (int index = 0; index < LOG_FIELDS; index++) {
        fields[index] = part_of_field[index] < 0 ? Py_None : parts[part_of_field[index]];
    }
}

#define PARTS 9

PyDoc_STRVAR(encode_log_parts_doc,
"encode_log_parts(timestamp: int, observed_timestamp: int, severity_number: int, severity_text: str,\n"
"                 attributes: dict, event_name: str, trace_id: int, span_id: int, trace_flags: int) -> bytes | None\n\n"
"encode_log_record for a record given by its fields (no body): the bytes a log record with these fields is\n"
"encoded to, or None when a field holds something this module does not encode.");

static PyObject *encode_log_parts(PyObject *module, PyObject *const *args, Py_ssize_t count) {
    if (count != PARTS) {
        PyErr_SetString(PyExc_TypeError, "encode_log_parts(timestamp, observed_timestamp, severity_number, "
                                         "severity_text, attributes, event_name, trace_id, span_id, trace_flags)");
        return NULL;
    }
    PyObject *fields[LOG_FIELDS];
    fields_of_parts(args, fields);
    Buffer buffer;
    if (start(&buffer) < 0) {
        return NULL;
    }
    return finish(&buffer, log_record_fields(&buffer, fields));
}

PyDoc_STRVAR(encode_any_value_doc,
"encode_any_value(value) -> bytes | None\n\n"
"The AnyValue message of a plain value, or None when the value is not one of the types this module encodes.");

static PyObject *encode_any_value(PyObject *module, PyObject *value) {
    Buffer buffer;
    if (start(&buffer) < 0) {
        return NULL;
    }
    return finish(&buffer, any_value(&buffer, value, 0));
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_CRC_FOLD 1
static int crc_fold_supported; /* the CPU has PCLMULQDQ and SSE4.1 (checked once, at import) */

/* CRC-32 (reflected 0xEDB88320) of whole 16-byte blocks, at least four of them, by carry-less multiplication: the
 * running remainder is folded forward 64 bytes at a time, then to 16, then reduced to 32 bits (Barrett). `crc` is
 * the register value (not inverted here), as in the table loop. The constants, bit-reflected: remainders of powers
 * of x modulo P for each fold distance, then P and floor(x^64 / P) for the reduction. */
__attribute__((target("pclmul,sse4.1"))) static uint32_t crc32_fold(uint32_t crc, const unsigned char *data,
                                                                   Py_ssize_t size) {
    const __m128i fold_64 = _mm_set_epi64x(0x1c6e41596LL, 0x154442bd4LL);
    const __m128i fold_16 = _mm_set_epi64x(0x0ccaa009eLL, 0x1751997d0LL);
    const __m128i fold_8 = _mm_set_epi64x(0, 0x163cd6124LL);
    const __m128i barrett = _mm_set_epi64x(0x1F7011641LL, 0x1DB710641LL);
    const __m128i mask32 = _mm_set_epi32(0, 0, 0, -1);
    __m128i x1 = _mm_xor_si128(_mm_loadu_si128((const __m128i *)data), _mm_cvtsi32_si128((int)crc));
    __m128i x2 = _mm_loadu_si128((const __m128i *)(data + 16));
    __m128i x3 = _mm_loadu_si128((const __m128i *)(data + 32));
    __m128i x4 = _mm_loadu_si128((const __m128i *)(data + 48));
    data += 64;
    size -= 64;
#define FOLD(x, k, next) \
    x = _mm_xor_si128(_mm_xor_si128(_mm_clmulepi64_si128(x, k, 0x00), _mm_clmulepi64_si128(x, k, 0x11)), next)
    while (size >= 64) {
        FOLD(x1, fold_64, _mm_loadu_si128((const __m128i *)data));
        FOLD(x2, fold_64, _mm_loadu_si128((const __m128i *)(data + 16)));
        FOLD(x3, fold_64, _mm_loadu_si128((const __m128i *)(data + 32)));
        FOLD(x4, fold_64, _mm_loadu_si128((const __m128i *)(data + 48)));
        data += 64;
        size -= 64;
    }
    FOLD(x1, fold_16, x2);
    FOLD(x1, fold_16, x3);
    FOLD(x1, fold_16, x4);
    while (size >= 16) {
        FOLD(x1, fold_16, _mm_loadu_si128((const __m128i *)data));
        data += 16;
        size -= 16;
    }
#undef FOLD
    /* 128 -> 64 bits */
    x1 = _mm_xor_si128(_mm_clmulepi64_si128(x1, fold_16, 0x10), _mm_srli_si128(x1, 8));
    /* 64 -> 32 bits */
    x1 = _mm_xor_si128(_mm_clmulepi64_si128(_mm_and_si128(x1, mask32), fold_8, 0x00), _mm_srli_si128(x1, 4));
    /* Barrett reduction */
    __m128i t = _mm_and_si128(_mm_clmulepi64_si128(_mm_and_si128(x1, mask32), barrett, 0x10), mask32);
    x1 = _mm_xor_si128(x1, _mm_clmulepi64_si128(t, barrett, 0x00));
    return (uint32_t)_mm_extract_epi32(x1, 1);
}
#endif

/* CRC-32 as zlib computes it (reflected polynomial 0xEDB88320): the spool's checksum. Eight bytes per step by
 * table, or folded (above) when the CPU can. */
static uint32_t crc_table[8][256];

static void build_crc_table(void) {
#ifdef HAVE_CRC_FOLD
    __builtin_cpu_init();
    crc_fold_supported = __builtin_cpu_supports("pclmul") && __builtin_cpu_supports("sse4.1");
#endif
    for (uint32_t byte = 0; byte < 256; byte++) {
        uint32_t crc = byte;
        for (int bit = 0; bit < 8; bit++) {
            crc = crc & 1 ? (crc >> 1) ^ 0xEDB88320U : crc >> 1;
        }
        crc_table[0][byte] = crc;
    }
    for (uint32_t byte = 0; byte < 256; byte++) {
        for (int slice = 1; slice < 8; slice++) {
            uint32_t previous = crc_table[slice - 1][byte];
            crc_table[slice][byte] = (previous >> 8) ^ crc_table[0][previous & 0xFF];
        }
    }
}

static uint32_t crc32_update(uint32_t crc, const unsigned char *data, Py_ssize_t size) {
    crc = ~crc;
#ifdef HAVE_CRC_FOLD
    if (size >= 64 && crc_fold_supported) { /* a typical record: about 20 ns instead of about 300 */
        Py_ssize_t blocks = size & ~(Py_ssize_t)15;
        crc = crc32_fold(crc, data, blocks);
        data += blocks;
        size -= blocks;
    }
#endif
    while (size >= 8) {
        uint32_t low = crc ^ ((uint32_t)data[0] | (uint32_t)data[1] << 8 | (uint32_t)data[2] << 16 | (uint32_t)data[3] << 24);
        crc = crc_table[7][low & 0xFF] ^ crc_table[6][(low >> 8) & 0xFF] ^ crc_table[5][(low >> 16) & 0xFF]
              ^ crc_table[4][low >> 24] ^ crc_table[3][data[4]] ^ crc_table[2][data[5]] ^ crc_table[1][data[6]]
              ^ crc_table[0][data[7]];
        data += 8;
        size -= 8;
    }
    while (size-- > 0) {
        crc = (crc >> 8) ^ crc_table[0][(crc ^ *data++) & 0xFF];
    }
    return ~crc;
}

#define FRAME_HEAD 22 /* header (magic, kind, length, crc32) 10 bytes, then scope number u32 and emit time u64 */

/* A record frame's head in the FRAME_HEAD bytes before its record, which must already be in place: magic, kind, payload
 * length and CRC-32 (of kind, then the payload), then the payload's own head (scope number u32, emit time u64). */
static void fill_record_head(unsigned char *out, unsigned char magic, unsigned char kind, uint32_t scope_number,
                             uint64_t emit_ns, Py_ssize_t record_size) {
    unsigned char *payload = out + 10;
    for (int index = 0; index < 4; index++) {
        payload[index] = (unsigned char)(scope_number >> (8 * index));
    }
    for (int index = 0; index < 8; index++) {
        payload[4 + index] = (unsigned char)(emit_ns >> (8 * index));
    }
    uint32_t length = (uint32_t)(12 + record_size);
    uint32_t checksum = crc32_update(kind, payload, 12 + record_size);
    out[0] = magic;
    out[1] = kind;
    for (int index = 0; index < 4; index++) {
        out[2 + index] = (unsigned char)(length >> (8 * index));
        out[6 + index] = (unsigned char)(checksum >> (8 * index));
    }
}

PyDoc_STRVAR(record_frame_doc,
"record_frame(magic: int, kind: int, scope_number: int, emit_ns: int, record: bytes) -> bytes\n\n"
"A spool record frame, exactly as spool.py builds it: header (magic, kind, payload length, CRC-32 of the payload\n"
"started at `kind`, little-endian) then the payload (scope number u32, emit time u64, the record).");

static PyObject *record_frame(PyObject *module, PyObject *const *args, Py_ssize_t count) {
    if (count != 5 || !PyBytes_CheckExact(args[4])) {
        PyErr_SetString(PyExc_TypeError, "record_frame(magic, kind, scope_number, emit_ns, record: bytes)");
        return NULL;
    }
    unsigned long magic = PyLong_AsUnsignedLong(args[0]);
    unsigned long kind = PyLong_AsUnsignedLong(args[1]);
    unsigned long scope_number = PyLong_AsUnsignedLong(args[2]);
    unsigned long long emit_ns = PyLong_AsUnsignedLongLong(args[3]);
    if (PyErr_Occurred()) {
        return NULL;
    }
    if (magic > 0xFF || kind > 0xFF || scope_number > 0xFFFFFFFFUL) {
        PyErr_SetString(PyExc_OverflowError, "record_frame: a header field is out of range");
        return NULL;
    }
    Py_ssize_t size = PyBytes_GET_SIZE(args[4]);
    if (size > (Py_ssize_t)0xFFFFFFFFU - 12) {
        PyErr_SetString(PyExc_OverflowError, "record_frame: record too large");
        return NULL;
    }
    PyObject *frame = PyBytes_FromStringAndSize(NULL, FRAME_HEAD + size);
    if (frame == NULL) {
        return NULL;
    }
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(frame);
    memcpy(out + FRAME_HEAD, PyBytes_AS_STRING(args[4]), (size_t)size);
    fill_record_head(out, (unsigned char)magic, (unsigned char)kind, (uint32_t)scope_number, emit_ns, size);
    return frame;
}

/* Length-delimited fields: tag, varint length, bytes. */
static Py_ssize_t field_size(Py_ssize_t size) {
    return 1 + varint_size((uint64_t)size) + size;
}

static char *put_field_head(char *out, char tag, Py_ssize_t size) {
    *out++ = tag;
    write_varint(out, (uint64_t)size);
    return out + varint_size((uint64_t)size);
}

static char *put_field(char *out, char tag, PyObject *bytes) {
    Py_ssize_t size = PyBytes_GET_SIZE(bytes);
    out = put_field_head(out, tag, size);
    memcpy(out, PyBytes_AS_STRING(bytes), (size_t)size);
    return out + size;
}

PyDoc_STRVAR(delimited_join_doc,
"delimited_join(tag: int, items: list[bytes]) -> bytes\n\n"
"Each item as a length-delimited field with `tag` (tag, varint length, bytes), concatenated: the records of one\n"
"ScopeLogs in an export request.");

static PyObject *delimited_join(PyObject *module, PyObject *const *args, Py_ssize_t count) {
    if (count != 2 || !PyList_CheckExact(args[1])) {
        PyErr_SetString(PyExc_TypeError, "delimited_join(tag: int, items: list[bytes])");
        return NULL;
    }
    unsigned long tag = PyLong_AsUnsignedLong(args[0]);
    if (tag == (unsigned long)-1 && PyErr_Occurred()) {
        return NULL;
    }
    if (tag > 0x7F) {
        PyErr_SetString(PyExc_OverflowError, "delimited_join: the tag must fit in one byte");
        return NULL;
    }
    PyObject *items = args[1];
    Py_ssize_t length = PyList_GET_SIZE(items);
    Py_ssize_t total = 0;
    for (Py_ssize_t index = 0; index < length; index++) {
        PyObject *item = PyList_GET_ITEM(items, index);
        if (!PyBytes_CheckExact(item)) {
            PyErr_SetString(PyExc_TypeError, "delimited_join: every item must be bytes");
            return NULL;
        }
        total += field_size(PyBytes_GET_SIZE(item));
    }
    PyObject *joined = PyBytes_FromStringAndSize(NULL, total);
    if (joined == NULL) {
        return NULL;
    }
    char *out = PyBytes_AS_STRING(joined);
    for (Py_ssize_t index = 0; index < length; index++) {
        out = put_field(out, (char)tag, PyList_GET_ITEM(items, index));
    }
    return joined;
}

PyDoc_STRVAR(write_held_doc,
"write_held(fd: int, data: bytes, offset: int, position: int) -> int\n\n"
"os.pwrite(fd, data[offset:], position) without releasing the GIL: for the spool's small appends to the page\n"
"cache, where handing the GIL to another thread and waiting to get it back costs more than the write itself.");

static PyObject *write_held(PyObject *module, PyObject *const *args, Py_ssize_t count) {
    if (count != 4 || !PyBytes_CheckExact(args[1])) {
        PyErr_SetString(PyExc_TypeError, "write_held(fd: int, data: bytes, offset: int, position: int)");
        return NULL;
    }
    long fd = PyLong_AsLong(args[0]);
    Py_ssize_t offset = PyLong_AsSsize_t(args[2]);
    long long position = PyLong_AsLongLong(args[3]);
    if (PyErr_Occurred()) {
        return NULL;
    }
    Py_ssize_t size = PyBytes_GET_SIZE(args[1]);
    if (fd < 0 || fd > INT_MAX || offset < 0 || offset > size || position < 0) {
        PyErr_SetString(PyExc_ValueError, "write_held: fd, offset or position out of range");
        return NULL;
    }
    ssize_t written;
    do {
        written = pwrite((int)fd, PyBytes_AS_STRING(args[1]) + offset, (size_t)(size - offset), (off_t)position);
    } while (written < 0 && errno == EINTR && PyErr_CheckSignals() == 0);
    if (written < 0) {
        return PyErr_Occurred() ? NULL : PyErr_SetFromErrno(PyExc_OSError);
    }
    return PyLong_FromSsize_t(written);
}

/* ---- The spool's append, compiled: encode, frame and write one record under the spool's lock ---------------- */

/* spool.py's MAGIC and KIND_RECORD (a test compares this path's segment bytes with spool.py's own). */
#define SPOOL_MAGIC 0xA7
#define SPOOL_KIND_RECORD 2

/* The writer state of spool.Spool, kept in C fields so that append_log reads it without attribute lookups;
 * spool.py reads and writes the same fields as ordinary attributes (member descriptors). In `interval` mode the
 * segment is also mapped (see _map_segment): `map` covers `map_length` bytes of it, of which the first `map_ready`
 * are allocated in the file, so a frame that ends within them is stored with memcpy instead of a write. The first
 * `map_released` bytes (whole pages the writer has passed) are no longer mapped, see _release_written. */
typedef struct {
    PyObject_HEAD
    char *map;
    long long map_length;
    long long map_ready;
    long long map_released;
    int segment_fd;
    long long segment;
    long long segment_size;
    long long segment_bytes;
    long long unacked;
    long long orphan_bytes;
    long long max_bytes;
    long long tail_bytes;
    long long tail_max;
    long long emitted;
    char dirty;
    char closed;
    char release_gil;
    PyObject *segment_scopes;
    PyObject *tail;
    PyObject *lock;
} SpoolWriter;

static PyObject *name_acquire, *name_release, *name_append, *name_popleft;

static PyObject *call_method(PyObject *name, PyObject *target, PyObject *argument) {
    PyObject *arguments[3] = {NULL, target, argument};
    size_t count = (argument == NULL ? 1 : 2) | PY_VECTORCALL_ARGUMENTS_OFFSET;
    return PyObject_VectorcallMethod(name, arguments + 1, count, NULL);
}

/* The bytes of the oldest remembered record (end - start of a tail entry), or -1 with an exception. */
static long long first_entry_bytes(PyObject *tail) {
    PyObject *entry = PySequence_GetItem(tail, 0);
    if (entry == NULL) {
        return -1;
    }
    long long size = -1;
    if (PyTuple_CheckExact(entry) && PyTuple_GET_SIZE(entry) == 6) {
        long long start = PyLong_AsLongLong(PyTuple_GET_ITEM(entry, 1));
        long long end = PyLong_AsLongLong(PyTuple_GET_ITEM(entry, 2));
        if (!PyErr_Occurred()) {
            size = end - start;
        }
    } else {
        PyErr_SetString(PyExc_TypeError, "SpoolWriter: a tail entry is not a 6-tuple");
    }
    Py_DECREF(entry);
    return size;
}

/* Remember an appended record for the exporter (Spool.append's bookkeeping); 0, or -1 with an exception. */
static int remember(SpoolWriter *self, PyObject *scope, PyObject *record, PyObject *emit, long long written) {
    PyObject *entry = PyTuple_New(6); /* (segment, start, end, scope, record, emit ns), as Spool.append keeps it */
    if (entry == NULL) {
        return -1;
    }
    long long positions[3] = {self->segment, self->segment_size - written, self->segment_size};
    for (int index = 0; index < 3; index++) {
        PyObject *number = PyLong_FromLongLong(positions[index]);
        if (number == NULL) {
            Py_DECREF(entry);
            return -1;
        }
        PyTuple_SET_ITEM(entry, index, number);
    }
    PyTuple_SET_ITEM(entry, 3, Py_NewRef(scope));
    PyTuple_SET_ITEM(entry, 4, Py_NewRef(record));
    PyTuple_SET_ITEM(entry, 5, Py_NewRef(emit));
    PyObject *result = call_method(name_append, self->tail, entry);
    Py_DECREF(entry);
    if (result == NULL) {
        return -1;
    }
    Py_DECREF(result);
    self->tail_bytes += written;
    while (self->tail_bytes > self->tail_max) {
        long long size = first_entry_bytes(self->tail);
        if (size < 0 || (result = call_method(name_popleft, self->tail, NULL)) == NULL) {
            return -1;
        }
        Py_DECREF(result);
        self->tail_bytes -= size;
    }
    return 0;
}

/* The file is allocated in steps of MAP_STEP bytes ahead of the mapped writer, and mapped MAP_STEP past the
 * segment's rotation size (a segment's last frame starts before that size and may end after it). */
#define MAP_STEP (256 << 10)

static long page_size = 4096; /* sysconf's, at import */

/* Unmap the segment (its file stays as it is). */
static void drop_map(SpoolWriter *self) {
    if (self->map != NULL && self->map_released < self->map_length) {
        munmap(self->map + self->map_released, (size_t)(self->map_length - self->map_released));
    }
    self->map = NULL;
    self->map_length = self->map_ready = self->map_released = 0;
}

/* Allocate the segment's file up to `ready` (within the mapping); 0, or -1 when it cannot be (errno set). */
static int allocate_to(SpoolWriter *self, long long ready) {
#ifdef __linux__
    if (fallocate(self->segment_fd, 0, (off_t)self->map_ready, (off_t)(ready - self->map_ready)) == 0) {
        self->map_ready = ready;
        return 0;
    }
    if (errno == EOPNOTSUPP || errno == ENOSYS) {
        drop_map(self); /* a file system that cannot allocate ahead: this segment is written */
    }
#endif
    return -1;
}

/* The end of the step that byte offset `end` falls in (`end` rounded up to a step), within the mapping. */
static long long step_end(SpoolWriter *self, long long end) {
    long long ready = (end + MAP_STEP - 1) / MAP_STEP * MAP_STEP;
    return ready < self->map_length ? ready : self->map_length;
}

/* 1 when the segment's mapping can take `size` more bytes: they end within its allocated part, or the file could
 * be allocated up to the end of their step. 0: write them instead (that also reports a full disk as an OSError,
 * where a store into an unallocated page would end the process with SIGBUS). */
static int mapped_room(SpoolWriter *self, Py_ssize_t size) {
    long long end = self->segment_size + size;
    if (end <= self->map_ready) {
        return 1;
    }
    return end <= self->map_length && allocate_to(self, step_end(self, end)) == 0;
}

/* Write the whole frame at the segment's end; the state counts what was written even when a write fails. */
static int write_frame(SpoolWriter *self, const char *frame, Py_ssize_t size) {
    Py_ssize_t written = 0;
    int status = 0;
    if (self->map != NULL && mapped_room(self, size)) {
        memcpy(self->map + self->segment_size, frame, (size_t)size);
        written = size;
    }
    while (written < size) {
        ssize_t count;
        off_t position = (off_t)(self->segment_size + written);
        if (self->release_gil) {
            Py_BEGIN_ALLOW_THREADS
            count = pwrite(self->segment_fd, frame + written, (size_t)(size - written), position);
            Py_END_ALLOW_THREADS
        } else {
            count = pwrite(self->segment_fd, frame + written, (size_t)(size - written), position);
        }
        if (count < 0) {
            if (errno == EINTR && PyErr_CheckSignals() == 0) {
                continue;
            }
            if (!PyErr_Occurred()) {
                PyErr_SetFromErrno(PyExc_OSError);
            }
            status = -1;
            break;
        }
        written += count;
    }
    self->segment_size += written;
    self->unacked += written;
    self->dirty = 1;
    return status;
}

PyDoc_STRVAR(append_log_doc,
"append_log(scope_number: int, scope: ScopeDef, log: LogRecord, emit_ns: int) -> bytes | bool | None\n\n"
"Spool.append(scope_number, scope, encode_log_record(log), emit_ns) in one call, for the common case: True when\n"
"the record was written. Otherwise nothing was written, and the answer is the encoded record, for Spool.append to\n"
"take the way that case needs (a scope new to the segment, a full segment, a full spool, a closed spool), or None\n"
"when this module does not encode the record (encoder.py then does). A failed write raises OSError.");

/* The common part of append_log and append_parts, once `encoded` (0, UNSUPPORTED or -1) says how encoding the record
 * after FRAME_HEAD free bytes of `buffer` went: frame it and write it, or answer what Spool.append must do. */
static PyObject *append_encoded(SpoolWriter *self, PyObject *scope_number_object, PyObject *scope,
                                PyObject *emit_object, Buffer *buffer, int encoded) {
    unsigned long scope_number = PyLong_AsUnsignedLong(scope_number_object);
    unsigned long long emit_ns = PyLong_AsUnsignedLongLong(emit_object);
    if (PyErr_Occurred()) {
        PyMem_Free(buffer->data);
        return NULL;
    }
    if (scope_number > 0xFFFFFFFFUL) {
        PyMem_Free(buffer->data);
        PyErr_SetString(PyExc_OverflowError, "append: scope number out of range");
        return NULL;
    }
    if (encoded != 0 || buffer->len - FRAME_HEAD > (Py_ssize_t)0xFFFFFFFFU - 12) {
        PyMem_Free(buffer->data);
        if (encoded < 0 && PyErr_ExceptionMatches(PyExc_MemoryError)) {
            return NULL;
        }
        PyErr_Clear(); /* encoder.py encodes the record, or names what is wrong with it */
        Py_RETURN_NONE;
    }
    fill_record_head((unsigned char *)buffer->data, SPOOL_MAGIC, SPOOL_KIND_RECORD, (uint32_t)scope_number, emit_ns,
                     buffer->len - FRAME_HEAD);
    PyObject *record = PyBytes_FromStringAndSize(buffer->data + FRAME_HEAD, buffer->len - FRAME_HEAD);
    if (record == NULL) {
        PyMem_Free(buffer->data);
        return NULL;
    }
    PyObject *lock = Py_XNewRef(self->lock);
    PyObject *answer = NULL;
    PyObject *acquired = lock == NULL ? NULL : call_method(name_acquire, lock, NULL);
    if (acquired == NULL) {
        if (!PyErr_Occurred()) {
            answer = Py_NewRef(record); /* no lock yet: Spool.append sorts it out */
        }
        goto done;
    }
    Py_DECREF(acquired);
    int known_scope = self->segment_scopes == NULL || self->tail == NULL
                          ? 0
                          : PySet_Contains(self->segment_scopes, scope_number_object);
    if (known_scope < 0) {
        goto unlock;
    }
    if (self->closed || !known_scope || self->segment_fd < 0 || self->segment_size >= self->segment_bytes
        || self->unacked + self->orphan_bytes + buffer->len > self->max_bytes) {
        answer = Py_NewRef(record);
        goto unlock;
    }
    long long before = self->segment_size;
    if (write_frame(self, buffer->data, buffer->len) < 0) {
        goto unlock;
    }
    self->emitted += 1;
    if (remember(self, scope, record, emit_object, self->segment_size - before) == 0) {
        answer = Py_NewRef(Py_True);
    }
unlock: {
        PyObject *type, *value, *traceback;
        PyErr_Fetch(&type, &value, &traceback);
        PyObject *released = call_method(name_release, lock, NULL);
        if (released == NULL) {
            Py_CLEAR(answer);
            Py_XDECREF(type);
            Py_XDECREF(value);
            Py_XDECREF(traceback);
        } else {
            Py_DECREF(released);
            PyErr_Restore(type, value, traceback);
        }
    }
done:
    Py_XDECREF(lock);
    Py_DECREF(record);
    PyMem_Free(buffer->data);
    return answer;
}

static PyObject *append_log(SpoolWriter *self, PyObject *const *args, Py_ssize_t count) {
    if (count != 4) {
        PyErr_SetString(PyExc_TypeError, "append_log(scope_number, scope, log, emit_ns)");
        return NULL;
    }
    Buffer buffer;
    if (start(&buffer) < 0) {
        return NULL;
    }
    buffer.len = FRAME_HEAD;
    int encoded = log_record(&buffer, args[2]);
    return append_encoded(self, args[0], args[1], args[3], &buffer, encoded);
}

PyDoc_STRVAR(append_parts_doc,
"append_parts(scope_number: int, scope: ScopeDef, timestamp: int, observed_timestamp: int, severity_number: int,\n"
"             severity_text: str, attributes: dict, event_name: str, trace_id: int, span_id: int, trace_flags: int)\n"
"    -> bytes | bool | None\n\n"
"append_log for a record given by its fields (no body), emitted at its observed time: what a log record with these\n"
"fields would be written as, with the same answers.");

static PyObject *append_parts(SpoolWriter *self, PyObject *const *args, Py_ssize_t count) {
    if (count != 2 + PARTS) {
        PyErr_SetString(PyExc_TypeError,
                        "append_parts(scope_number, scope, timestamp, observed_timestamp, severity_number, "
                        "severity_text, attributes, event_name, trace_id, span_id, trace_flags)");
        return NULL;
    }
    PyObject *fields[LOG_FIELDS];
    fields_of_parts(args + 2, fields);
    Buffer buffer;
    if (start(&buffer) < 0) {
        return NULL;
    }
    buffer.len = FRAME_HEAD;
    int encoded = log_record_fields(&buffer, fields);
    return append_encoded(self, args[0], args[1], args[3], &buffer, encoded);
}

PyDoc_STRVAR(map_segment_doc,
"_map_segment() -> bool\n\n"
"Map the open segment, so that appends are stored into the page cache without a system call each: a record is in\n"
"the OS as soon as it is copied, as with a write. The file is allocated a step ahead of the data, so a process that\n"
"dies leaves a zero tail after its last frame (readers skip it). False when the segment cannot be mapped; appends\n"
"are then written.");

static PyObject *map_segment(SpoolWriter *self, PyObject *unused) {
#ifdef __linux__
    if (self->map == NULL && self->segment_fd >= 0) {
        long long length = (self->segment_bytes + MAP_STEP - 1) / MAP_STEP * MAP_STEP + MAP_STEP;
        void *map = mmap(NULL, (size_t)length, PROT_READ | PROT_WRITE, MAP_SHARED, self->segment_fd, 0);
        if (map != MAP_FAILED) {
            self->map = map;
            self->map_length = length;
            self->map_ready = self->segment_size;
            self->map_released = 0;
        }
    }
#endif
    return PyBool_FromLong(self->map != NULL);
}

PyDoc_STRVAR(unmap_segment_doc,
"_unmap_segment(truncate: bool) -> None\n\n"
"Unmap the segment; with truncate, cut its file back to the data's length (at rotation and close; never in a\n"
"forked child, whose parent still writes that file). A file that cannot be cut keeps its zero room, which\n"
"readers skip, so that is not an error.");

static PyObject *unmap_segment(SpoolWriter *self, PyObject *truncate) {
    int cut = PyObject_IsTrue(truncate);
    if (cut < 0) {
        return NULL;
    }
    long long allocated = self->map_ready;
    drop_map(self);
    if (cut && allocated > self->segment_size && ftruncate(self->segment_fd, (off_t)self->segment_size) < 0) {
        /* the zero room stays; see above */
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(allocate_ahead_doc,
"_allocate_ahead() -> tuple[int, int] | None\n\n"
"Allocate the mapped segment's next step when less than a step is left ahead of its data (call with the spool's\n"
"lock held); the answer is the offset and length of the room after the data, for _populate. None: nothing to do\n"
"or it failed (the writer then allocates, or writes, as it needs).");

static PyObject *allocate_ahead(SpoolWriter *self, PyObject *unused) {
    long long start = self->map_ready;
    if (self->map == NULL || self->closed || start - self->segment_size >= MAP_STEP || start >= self->map_length) {
        Py_RETURN_NONE;
    }
    if (allocate_to(self, step_end(self, start + 1)) < 0) {
        Py_RETURN_NONE;
    }
    /* From the writer's position: what it allocated itself is faulted in too (pages already in cost little). */
    return Py_BuildValue("(LL)", self->segment_size, self->map_ready - self->segment_size);
}

PyDoc_STRVAR(populate_doc,
"_populate(offset: int, length: int) -> None\n\n"
"Fault in those bytes of the mapped segment (MADV_POPULATE_WRITE, Linux 5.14+) without holding the GIL, so the\n"
"appends that reach them copy without a page fault each. Best effort: the mapping may have moved on meanwhile\n"
"(the kernel then faults nothing, or pages of the next segment within its file).");

static PyObject *populate(SpoolWriter *self, PyObject *const *args, Py_ssize_t count) {
    long long offset = count == 2 ? PyLong_AsLongLong(args[0]) : -1;
    long long length = count == 2 ? PyLong_AsLongLong(args[1]) : -1;
    if (PyErr_Occurred()) {
        return NULL;
    }
    if (offset < 0 || length < 0) {
        PyErr_SetString(PyExc_ValueError, "_populate(offset, length): both at least 0");
        return NULL;
    }
#ifdef MADV_POPULATE_WRITE
    char *map = self->map;
    long long first_page = offset / page_size * page_size;
    if (first_page < self->map_released) {
        first_page = self->map_released;
    }
    if (map != NULL && first_page < offset + length && offset + length <= self->map_length) {
        Py_BEGIN_ALLOW_THREADS
        madvise(map + first_page, (size_t)(offset + length - first_page), MADV_POPULATE_WRITE);
        Py_END_ALLOW_THREADS
    }
#endif
    Py_RETURN_NONE;
}

PyDoc_STRVAR(release_written_doc,
"_release_written() -> None\n\n"
"Unmap the mapped segment's whole pages before the writer's position (call with the spool's lock held, before\n"
"syncing). Writing back a page that is still mapped makes the kernel write-protect it and flush it from the TLB of\n"
"every CPU running this process, one interrupt per page, which in a busy process on a virtual machine cost the\n"
"sync ten times its own work (docs/delivery.md); an unmapped page is written back without that, and the writer\n"
"never stores into those pages again.");

static PyObject *release_written(SpoolWriter *self, PyObject *unused) {
    long long end = self->segment_size / page_size * page_size;
    if (end > self->map_length) {
        end = self->map_length;
    }
    if (self->map != NULL && end > self->map_released) {
        if (munmap(self->map + self->map_released, (size_t)(end - self->map_released)) < 0) {
            return PyErr_SetFromErrno(PyExc_OSError);
        }
        self->map_released = end;
    }
    Py_RETURN_NONE;
}

static int writer_traverse(SpoolWriter *self, visitproc visit, void *arg) {
    Py_VISIT(self->segment_scopes);
    Py_VISIT(self->tail);
    Py_VISIT(self->lock);
    return 0;
}

static int writer_clear(SpoolWriter *self) {
    Py_CLEAR(self->segment_scopes);
    Py_CLEAR(self->tail);
    Py_CLEAR(self->lock);
    return 0;
}

static void writer_dealloc(SpoolWriter *self) {
    PyObject_GC_UnTrack(self);
    drop_map(self);
    writer_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMemberDef writer_members[] = {
    {"_segment_fd", T_INT, offsetof(SpoolWriter, segment_fd), 0, NULL},
    {"_segment", T_LONGLONG, offsetof(SpoolWriter, segment), 0, NULL},
    {"_segment_size", T_LONGLONG, offsetof(SpoolWriter, segment_size), 0, NULL},
    {"segment_bytes", T_LONGLONG, offsetof(SpoolWriter, segment_bytes), 0, NULL},
    {"_unacked", T_LONGLONG, offsetof(SpoolWriter, unacked), 0, NULL},
    {"_orphan_bytes", T_LONGLONG, offsetof(SpoolWriter, orphan_bytes), 0, NULL},
    {"max_bytes", T_LONGLONG, offsetof(SpoolWriter, max_bytes), 0, NULL},
    {"_tail_bytes", T_LONGLONG, offsetof(SpoolWriter, tail_bytes), 0, NULL},
    {"_tail_max", T_LONGLONG, offsetof(SpoolWriter, tail_max), 0, NULL},
    {"emitted", T_LONGLONG, offsetof(SpoolWriter, emitted), 0, NULL},
    {"_dirty", T_BOOL, offsetof(SpoolWriter, dirty), 0, NULL},
    {"_closed", T_BOOL, offsetof(SpoolWriter, closed), 0, NULL},
    {"_release_gil", T_BOOL, offsetof(SpoolWriter, release_gil), 0, NULL},
    {"_segment_scopes", T_OBJECT_EX, offsetof(SpoolWriter, segment_scopes), 0, NULL},
    {"_tail", T_OBJECT_EX, offsetof(SpoolWriter, tail), 0, NULL},
    {"_lock", T_OBJECT_EX, offsetof(SpoolWriter, lock), 0, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyMethodDef writer_methods[] = {
    {"append_log", (PyCFunction)(void (*)(void))append_log, METH_FASTCALL, append_log_doc},
    {"append_parts", (PyCFunction)(void (*)(void))append_parts, METH_FASTCALL, append_parts_doc},
    {"_map_segment", (PyCFunction)map_segment, METH_NOARGS, map_segment_doc},
    {"_unmap_segment", (PyCFunction)unmap_segment, METH_O, unmap_segment_doc},
    {"_allocate_ahead", (PyCFunction)allocate_ahead, METH_NOARGS, allocate_ahead_doc},
    {"_populate", (PyCFunction)(void (*)(void))populate, METH_FASTCALL, populate_doc},
    {"_release_written", (PyCFunction)release_written, METH_NOARGS, release_written_doc},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject SpoolWriterType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "otel_audit.delivery._wire.SpoolWriter",
    .tp_doc = PyDoc_STR("Base of spool.Spool: its writer state in C fields and append_log, its compiled append."),
    .tp_basicsize = sizeof(SpoolWriter),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)writer_dealloc,
    .tp_traverse = (traverseproc)writer_traverse,
    .tp_clear = (inquiry)writer_clear,
    .tp_members = writer_members,
    .tp_methods = writer_methods,
};

/* ---- DurableLogRecordProcessor's direct stage in disk and strict mode, compiled: the same steps as the Python
 * function processor.py's direct_stage defines, without an interpreter frame per record. ------------------------- */

typedef struct {
    PyObject_HEAD
    SpoolWriter *spool;
    PyObject *scope_number, *scope; /* the logger's scope entry */
    PyObject *append;               /* Spool.append, for a record append_parts encoded but left to it */
    PyObject *appended;             /* the processor's WakeCounter: count the record, wake the exporter */
    PyObject *write_failed;         /* spool.write_failed: the AuditDeliveryError a failed write raises */
    vectorcallfunc vectorcall;
} SpoolStage;

/* Raise write_failed(exc) from the OSError being raised. */
static void raise_write_failed(SpoolStage *self) {
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    PyErr_NormalizeException(&type, &value, &traceback);
    if (traceback != NULL) {
        PyException_SetTraceback(value, traceback);
    }
    PyObject *error = PyObject_CallOneArg(self->write_failed, value);
    if (error == NULL) {
        Py_XDECREF(type);
        Py_XDECREF(value);
        Py_XDECREF(traceback);
        return;
    }
    PyException_SetContext(error, Py_NewRef(value));
    PyException_SetCause(error, value); /* steals `value`; also suppresses the context, as `raise ... from` does */
    PyErr_SetObject((PyObject *)Py_TYPE(error), error);
    Py_DECREF(error);
    Py_XDECREF(type);
    Py_XDECREF(traceback);
}

static PyObject *spool_stage_call(SpoolStage *self, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    if (PyVectorcall_NARGS(nargsf) != PARTS || kwnames != NULL) {
        PyErr_SetString(PyExc_TypeError, "a direct stage takes the 9 fields of a record, by position");
        return NULL;
    }
    PyObject *call[2 + PARTS] = {self->scope_number, self->scope};
    memcpy(call + 2, args, PARTS * sizeof(PyObject *));
    PyObject *pending = append_parts(self->spool, call, 2 + PARTS);
    if (pending == NULL) {
        if (PyErr_ExceptionMatches(PyExc_OSError)) {
            raise_write_failed(self);
        }
        return NULL;
    }
    if (pending == Py_None) {
        Py_DECREF(pending);
        Py_RETURN_FALSE; /* not encoded here: on_emit's path encodes it or names what is wrong with it */
    }
    if (pending != Py_True) {
        PyObject *append_args[4] = {self->scope_number, self->scope, pending, args[1]};
        PyObject *appended = PyObject_Vectorcall(self->append, append_args, 4, NULL);
        Py_DECREF(pending);
        if (appended == NULL) {
            return NULL;
        }
        Py_DECREF(appended);
    } else {
        Py_DECREF(pending);
    }
    PyObject *counted = PyObject_CallNoArgs(self->appended);
    if (counted == NULL) {
        return NULL;
    }
    Py_DECREF(counted);
    Py_RETURN_TRUE;
}

static PyObject *spool_stage_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    PyObject *spool, *scope_number, *scope, *append, *appended, *write_failed;
    static char *keywords[] = {"spool", "scope_number", "scope", "append", "appended", "write_failed", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!OOOOO:SpoolStage", keywords, &SpoolWriterType, &spool,
                                     &scope_number, &scope, &append, &appended, &write_failed)) {
        return NULL;
    }
    SpoolStage *self = (SpoolStage *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->spool = (SpoolWriter *)Py_NewRef(spool);
    self->scope_number = Py_NewRef(scope_number);
    self->scope = Py_NewRef(scope);
    self->append = Py_NewRef(append);
    self->appended = Py_NewRef(appended);
    self->write_failed = Py_NewRef(write_failed);
    self->vectorcall = (vectorcallfunc)spool_stage_call;
    return (PyObject *)self;
}

static int spool_stage_traverse(SpoolStage *self, visitproc visit, void *arg) {
    Py_VISIT(self->spool);
    Py_VISIT(self->scope_number);
    Py_VISIT(self->scope);
    Py_VISIT(self->append);
    Py_VISIT(self->appended);
    Py_VISIT(self->write_failed);
    return 0;
}

static int spool_stage_clear(SpoolStage *self) {
    Py_CLEAR(self->spool);
    Py_CLEAR(self->scope_number);
    Py_CLEAR(self->scope);
    Py_CLEAR(self->append);
    Py_CLEAR(self->appended);
    Py_CLEAR(self->write_failed);
    return 0;
}

static void spool_stage_dealloc(SpoolStage *self) {
    PyObject_GC_UnTrack(self);
    spool_stage_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

PyDoc_STRVAR(spool_stage_doc,
"SpoolStage(spool, scope_number, scope, append, appended, write_failed)\n\n"
"The delivery stage of the direct path: called with a record's 9 fields, it spools them with append_parts\n"
"(append takes an encoded record append_parts left to it; a failed write raises write_failed(error)), counts\n"
"the record with appended() and answers True; False when the record is not encoded here.");

static PyTypeObject SpoolStageType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "otel_audit.delivery._wire.SpoolStage",
    .tp_basicsize = sizeof(SpoolStage),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = spool_stage_doc,
    .tp_new = spool_stage_new,
    .tp_traverse = (traverseproc)spool_stage_traverse,
    .tp_clear = (inquiry)spool_stage_clear,
    .tp_dealloc = (destructor)spool_stage_dealloc,
    .tp_vectorcall_offset = offsetof(SpoolStage, vectorcall),
    .tp_call = PyVectorcall_Call,
};

/* ---- The processor's count of queued records (processor.WakeCounter, compiled) -------------------------------- */

typedef struct {
    PyObject_HEAD
    long long every;
    long long count;
    PyObject *wake;
    vectorcallfunc vectorcall;
} WakeCounter;

static PyObject *wake_counter_call(WakeCounter *self, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    if (PyVectorcall_NARGS(nargsf) != 0 || kwnames != NULL) {
        PyErr_SetString(PyExc_TypeError, "a WakeCounter is called without arguments");
        return NULL;
    }
    if (++self->count < self->every) {
        Py_RETURN_NONE;
    }
    self->count = 0;
    if (self->wake == NULL) {
        PyErr_SetString(PyExc_AttributeError, "WakeCounter has no wake to call");
        return NULL;
    }
    PyObject *wake = Py_NewRef(self->wake);
    PyObject *woken = PyObject_CallNoArgs(wake);
    Py_DECREF(wake);
    if (woken == NULL) {
        return NULL;
    }
    Py_DECREF(woken);
    Py_RETURN_NONE;
}

static PyObject *wake_counter_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    long long every;
    PyObject *wake;
    static char *keywords[] = {"every", "wake", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "LO:WakeCounter", keywords, &every, &wake)) {
        return NULL;
    }
    WakeCounter *self = (WakeCounter *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->every = every;
    self->wake = Py_NewRef(wake);
    self->vectorcall = (vectorcallfunc)wake_counter_call;
    return (PyObject *)self;
}

static int wake_counter_traverse(WakeCounter *self, visitproc visit, void *arg) {
    Py_VISIT(self->wake);
    return 0;
}

static int wake_counter_clear(WakeCounter *self) {
    Py_CLEAR(self->wake);
    return 0;
}

static void wake_counter_dealloc(WakeCounter *self) {
    PyObject_GC_UnTrack(self);
    wake_counter_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMemberDef wake_counter_members[] = {
    {"every", T_LONGLONG, offsetof(WakeCounter, every), 0, NULL},
    {"count", T_LONGLONG, offsetof(WakeCounter, count), 0, NULL},
    {"wake", T_OBJECT_EX, offsetof(WakeCounter, wake), 0, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject WakeCounterType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "otel_audit.delivery._wire.WakeCounter",
    .tp_basicsize = sizeof(WakeCounter),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = PyDoc_STR("WakeCounter(every, wake): calling it counts a queued record and calls wake() every `every` "
                        "records (processor.py's Python class of the same name is the reference)."),
    .tp_new = wake_counter_new,
    .tp_traverse = (traverseproc)wake_counter_traverse,
    .tp_clear = (inquiry)wake_counter_clear,
    .tp_dealloc = (destructor)wake_counter_dealloc,
    .tp_members = wake_counter_members,
    .tp_vectorcall_offset = offsetof(WakeCounter, vectorcall),
    .tp_call = PyVectorcall_Call,
};

/* ---- An export request from spooled records (encoder.frame_request, compiled) --------------------------------- */

static PyObject *name_key, *name_resource, *name_scope, *name_resource_schema_url, *name_scope_schema_url;

/* One ResourceLogs entry: a ScopeDef's encoded fields and the records that share it. */
typedef struct {
    PyObject *resource, *scope, *resource_schema_url, *scope_schema_url; /* bytes (the schema URLs UTF-8 encoded) */
    Py_ssize_t first, count, records_size, scope_logs_size, resource_logs_size;
} Run;

static void clear_run(Run *run) {
    Py_CLEAR(run->resource);
    Py_CLEAR(run->scope);
    Py_CLEAR(run->resource_schema_url);
    Py_CLEAR(run->scope_schema_url);
}

/* A run's fields from its ScopeDef: 0, UNSUPPORTED (not bytes and str as ScopeDef keeps them), or -1. */
static int start_run(Run *run, PyObject *scope_def, Py_ssize_t first) {
    memset(run, 0, sizeof(*run));
    run->first = first;
    run->resource = PyObject_GetAttr(scope_def, name_resource);
    run->scope = run->resource == NULL ? NULL : PyObject_GetAttr(scope_def, name_scope);
    PyObject *resource_url = run->scope == NULL ? NULL : PyObject_GetAttr(scope_def, name_resource_schema_url);
    PyObject *scope_url = resource_url == NULL ? NULL : PyObject_GetAttr(scope_def, name_scope_schema_url);
    if (scope_url == NULL) {
        Py_XDECREF(resource_url);
        return -1;
    }
    int status = UNSUPPORTED;
    if (PyBytes_CheckExact(run->resource) && PyBytes_CheckExact(run->scope) && PyUnicode_CheckExact(resource_url)
        && PyUnicode_CheckExact(scope_url)) {
        run->resource_schema_url = PyUnicode_AsUTF8String(resource_url);
        run->scope_schema_url = run->resource_schema_url == NULL ? NULL : PyUnicode_AsUTF8String(scope_url);
        status = run->scope_schema_url == NULL ? -1 : 0;
    }
    Py_DECREF(resource_url);
    Py_DECREF(scope_url);
    return status;
}

static void size_run(Run *run) {
    Py_ssize_t scope_url = PyBytes_GET_SIZE(run->scope_schema_url);
    Py_ssize_t resource_url = PyBytes_GET_SIZE(run->resource_schema_url);
    run->scope_logs_size = field_size(PyBytes_GET_SIZE(run->scope)) + run->records_size
                           + (scope_url ? field_size(scope_url) : 0);
    run->resource_logs_size = field_size(PyBytes_GET_SIZE(run->resource)) + field_size(run->scope_logs_size)
                              + (resource_url ? field_size(resource_url) : 0);
}

/* Whether a record starts a new run: another ScopeDef object whose key differs (1), the same (0), or -1. */
static int new_scope(PyObject *current, PyObject *scope_def) {
    if (current == NULL) {
        return 1;
    }
    if (scope_def == current) {
        return 0;
    }
    PyObject *key = PyObject_GetAttr(scope_def, name_key);
    PyObject *current_key = key == NULL ? NULL : PyObject_GetAttr(current, name_key);
    int equal = current_key == NULL ? -1 : PyObject_RichCompareBool(key, current_key, Py_EQ);
    Py_XDECREF(key);
    Py_XDECREF(current_key);
    return equal < 0 ? -1 : !equal;
}

PyDoc_STRVAR(frame_request_doc,
"frame_request(records: list[tuple[ScopeDef, bytes]]) -> bytes | None\n\n"
"encoder.frame_request's ExportLogsServiceRequest, written into one buffer: the nested lengths are computed first,\n"
"so no record is copied more than once. None when the input is not the plain list of pairs the spool makes.");

static PyObject *frame_request(PyObject *module, PyObject *records) {
    if (!PyList_CheckExact(records)) {
        Py_RETURN_NONE;
    }
    Py_ssize_t length = PyList_GET_SIZE(records);
    Py_ssize_t capacity = 4, runs_count = 0, total = 0;
    Run *runs = PyMem_Calloc((size_t)capacity, sizeof(Run));
    if (runs == NULL) {
        return PyErr_NoMemory();
    }
    PyObject *result = NULL, *current = NULL;
    int status = 0;
    for (Py_ssize_t index = 0; index < length && status == 0; index++) {
        PyObject *pair = PyList_GET_ITEM(records, index);
        if (!PyTuple_CheckExact(pair) || PyTuple_GET_SIZE(pair) != 2 || !PyBytes_CheckExact(PyTuple_GET_ITEM(pair, 1))) {
            status = UNSUPPORTED;
            break;
        }
        PyObject *scope_def = PyTuple_GET_ITEM(pair, 0);
        int fresh = new_scope(current, scope_def);
        if (fresh < 0) {
            status = -1;
            break;
        }
        if (fresh) {
            if (runs_count == capacity) {
                Run *grown = PyMem_Realloc(runs, (size_t)capacity * 2 * sizeof(Run));
                if (grown == NULL) {
                    PyErr_NoMemory();
                    status = -1;
                    break;
                }
                runs = grown;
                capacity *= 2;
            }
            status = start_run(&runs[runs_count], scope_def, index);
            runs_count++;
            current = scope_def;
        }
        runs[runs_count - 1].count++;
        runs[runs_count - 1].records_size += field_size(PyBytes_GET_SIZE(PyTuple_GET_ITEM(pair, 1)));
    }
    if (status == 0) {
        for (Py_ssize_t index = 0; index < runs_count; index++) {
            size_run(&runs[index]);
            total += field_size(runs[index].resource_logs_size);
        }
        result = PyBytes_FromStringAndSize(NULL, total);
    }
    if (result != NULL) {
        char *out = PyBytes_AS_STRING(result);
        for (Py_ssize_t index = 0; index < runs_count; index++) {
            Run *run = &runs[index];
            out = put_field_head(out, 0x0a, run->resource_logs_size);
            out = put_field(out, 0x0a, run->resource);
            out = put_field_head(out, 0x12, run->scope_logs_size);
            out = put_field(out, 0x0a, run->scope);
            for (Py_ssize_t item = run->first; item < run->first + run->count; item++) {
                out = put_field(out, 0x12, PyTuple_GET_ITEM(PyList_GET_ITEM(records, item), 1));
            }
            if (PyBytes_GET_SIZE(run->scope_schema_url)) {
                out = put_field(out, 0x1a, run->scope_schema_url);
            }
            if (PyBytes_GET_SIZE(run->resource_schema_url)) {
                out = put_field(out, 0x1a, run->resource_schema_url);
            }
        }
    } else if (status == UNSUPPORTED) {
        result = Py_NewRef(Py_None);
    }
    for (Py_ssize_t index = 0; index < runs_count; index++) {
        clear_run(&runs[index]);
    }
    PyMem_Free(runs);
    return result;
}

PyDoc_STRVAR(set_bounded_attributes_doc,
"set_bounded_attributes(container: type) -> None\n\n"
"The SDK's attribute container class (opentelemetry.attributes.BoundedAttributes): records whose attributes are one\n"
"are encoded from its items and dropped count, as encoder.py reads them, instead of being declined.");

static PyObject *set_bounded_attributes(PyObject *Py_UNUSED(module), PyObject *container) {
    if (!PyType_Check(container)) {
        PyErr_SetString(PyExc_TypeError, "set_bounded_attributes: a class");
        return NULL;
    }
    Py_XSETREF(bounded_attributes, Py_NewRef(container));
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"set_bounded_attributes", set_bounded_attributes, METH_O, set_bounded_attributes_doc},
    {"write_held", (PyCFunction)(void (*)(void))write_held, METH_FASTCALL, write_held_doc},
    {"delimited_join", (PyCFunction)(void (*)(void))delimited_join, METH_FASTCALL, delimited_join_doc},
    {"frame_request", frame_request, METH_O, frame_request_doc},
    {"record_frame", (PyCFunction)(void (*)(void))record_frame, METH_FASTCALL, record_frame_doc},
    {"encode_log_record", encode_log_record, METH_O, encode_log_record_doc},
    {"encode_log_parts", (PyCFunction)(void (*)(void))encode_log_parts, METH_FASTCALL, encode_log_parts_doc},
    {"encode_any_value", encode_any_value, METH_O, encode_any_value_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_definition = {
    PyModuleDef_HEAD_INIT, "_wire", "Compiled OTLP wire encoding of log record attributes (see encoder.py).", -1, methods,
};

PyMODINIT_FUNC PyInit__wire(void) {
    build_crc_table();
    long size = sysconf(_SC_PAGESIZE);
    if (size > 0) {
        page_size = size;
    }
    name_value = PyUnicode_InternFromString("value");
    name_dict_ = PyUnicode_InternFromString("_dict");
    name_dropped = PyUnicode_InternFromString("dropped");
    PyObject *enum_module = PyImport_ImportModule("enum");
    enum_type = enum_module == NULL ? NULL : PyObject_GetAttrString(enum_module, "Enum");
    Py_XDECREF(enum_module);
    if (name_value == NULL || name_dict_ == NULL || name_dropped == NULL || enum_type == NULL) {
        return NULL;
    }
    const char *names[10] = {"timestamp", "observed_timestamp", "severity_number", "severity_text", "body",
                             "attributes", "trace_flags", "trace_id", "span_id", "event_name"};
    PyObject **slots[10] = {&name_timestamp, &name_observed, &name_severity_number, &name_severity_text, &name_body,
                            &name_attributes, &name_trace_flags, &name_trace_id, &name_span_id, &name_event_name};
    for (int index = 0; index < 10; index++) {
        *slots[index] = PyUnicode_InternFromString(names[index]);
        if (*slots[index] == NULL) {
            return NULL;
        }
    }
    const char *scope_names[5] = {"key", "resource", "scope", "resource_schema_url", "scope_schema_url"};
    PyObject **scope_slots[5] = {&name_key, &name_resource, &name_scope, &name_resource_schema_url,
                                 &name_scope_schema_url};
    for (int index = 0; index < 5; index++) {
        *scope_slots[index] = PyUnicode_InternFromString(scope_names[index]);
        if (*scope_slots[index] == NULL) {
            return NULL;
        }
    }
    const char *method_names[4] = {"acquire", "release", "append", "popleft"};
    PyObject **method_slots[4] = {&name_acquire, &name_release, &name_append, &name_popleft};
    for (int index = 0; index < 4; index++) {
        *method_slots[index] = PyUnicode_InternFromString(method_names[index]);
        if (*method_slots[index] == NULL) {
            return NULL;
        }
    }
    if (PyType_Ready(&SpoolWriterType) < 0 || PyType_Ready(&SpoolStageType) < 0 || PyType_Ready(&WakeCounterType) < 0) {
        return NULL;
    }
    PyObject *module = PyModule_Create(&module_definition);
    if (module == NULL) {
        return NULL;
    }
    if (PyModule_AddObjectRef(module, "SpoolWriter", (PyObject *)&SpoolWriterType) < 0
        || PyModule_AddObjectRef(module, "SpoolStage", (PyObject *)&SpoolStageType) < 0
        || PyModule_AddObjectRef(module, "WakeCounter", (PyObject *)&WakeCounterType) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
