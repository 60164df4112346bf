/* The OTLP wire encoding of log record attributes, compiled: the measured hot path of emit.
 *
 * encoder.py is the reference; this module writes the same bytes for the plain values audit records carry
 * (exact str, int, bool, float, None, bytes, list, tuple and dict with str keys) and answers None for anything
 * else, so encoder.py encodes that record itself. No Python code runs while a value is encoded (exact types
 * only), so the containers cannot change under the encoder.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

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
    int size = 1;
    while (value >= 0x80) {
        value >>= 7;
        size++;
    }
    return size;
}

static void write_varint(char *out, uint64_t value) {
    while (value >= 0x80) {
        *out++ = (char)((value & 0x7F) | 0x80);
        value >>= 7;
    }
    *out = (char)value;
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
    return put_bytes(buffer, &byte, 1);
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
    const char *utf8 = PyUnicode_AsUTF8AndSize(text, &size);
    if (utf8 == NULL) {
        return -1;
    }
    if (put_byte(buffer, tag) < 0 || put_varint(buffer, (uint64_t)size) < 0) {
        return -1;
    }
    return put_bytes(buffer, utf8, size);
}

static int any_value(Buffer *buffer, PyObject *value, int depth);

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
            Py_ssize_t start = buffer->len;
            int status = key_value(buffer, key, item, depth);
            if (status != 0) {
                return status;
            }
            if (delimit(buffer, 0x0a, start) < 0) {
                return -1;
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

PyDoc_STRVAR(encode_attributes_doc,
"encode_attributes(attributes: dict) -> bytes | None\n\n"
"The LogRecord.attributes fields (tag 6, one KeyValue each, in dict order), or None when a key or value is not\n"
"one of the plain types this module encodes (encoder.py then encodes the record).");

static PyObject *encode_attributes(PyObject *module, PyObject *attributes) {
    if (!PyDict_CheckExact(attributes)) {
        Py_RETURN_NONE;
    }
    Buffer buffer;
    if (start(&buffer) < 0) {
        return NULL;
    }
    Py_ssize_t position = 0;
    PyObject *key, *value;
    int status = 0;
    while (status == 0 && PyDict_Next(attributes, &position, &key, &value)) {
        Py_ssize_t field = buffer.len;
        status = key_value(&buffer, key, value, 0);
        if (status == 0) {
            status = delimit(&buffer, 0x32, field);
        }
    }
    return finish(&buffer, status);
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

static PyMethodDef methods[] = {
    {"encode_attributes", encode_attributes, METH_O, encode_attributes_doc},
    {"encode_any_value", encode_any_value, METH_O, encode_any_value_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_definition = {
    PyModuleDef_HEAD_INIT, "_wire", "Compiled OTLP wire encoding of log record attributes (see encoder.py).", -1, methods,
};

PyMODINIT_FUNC PyInit__wire(void) {
    return PyModule_Create(&module_definition);
}
