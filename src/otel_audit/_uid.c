/* new_uid(), compiled: the `log.record.uid` of every audit event, a UUIDv7 string (see logger.new_uid, the
 * reference and the fallback). 48-bit Unix milliseconds, version 7, 74 random bits from a xorshift128+ generator
 * seeded from the kernel, and seeded again in every forked child so parent and child never share a sequence.
 * The bits only need to make collisions improbable; they are not secrets. The GIL serialises callers.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

static uint64_t state[2];
static int seeded = 0;

static void seed(void) {
    uint64_t fresh[2] = {0, 0};
    if (getrandom(fresh, sizeof(fresh), 0) != (ssize_t)sizeof(fresh)) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        fresh[0] = (uint64_t)now.tv_nsec * 0x9E3779B97F4A7C15ULL ^ (uint64_t)getpid();
        fresh[1] = (uint64_t)now.tv_sec * 0xBF58476D1CE4E5B9ULL ^ (uint64_t)(uintptr_t)&now;
    }
    state[0] = fresh[0] | 1; /* xorshift128+ needs a non-zero state */
    state[1] = fresh[1];
    seeded = 1;
}

static void forget_seed_in_child(void) {
    seeded = 0;
}

static uint64_t next_random(void) {
    uint64_t s1 = state[0];
    const uint64_t s0 = state[1];
    state[0] = s0;
    s1 ^= s1 << 23;
    state[1] = s1 ^ s0 ^ (s1 >> 17) ^ (s0 >> 26);
    return state[1] + s0;
}

static void hex(Py_UCS1 *out, uint64_t value, int digits) {
    static const char digits_of[] = "0123456789abcdef";
    for (int index = digits - 1; index >= 0; index--) {
        out[index] = (Py_UCS1)digits_of[value & 0xF];
        value >>= 4;
    }
}

PyDoc_STRVAR(new_uid_doc, "new_uid() -> str\n\nA time-ordered unique id in the UUIDv7 layout (lower-case, 36 characters).");

static PyObject *new_uid(PyObject *module, PyObject *unused) {
    if (!seeded) {
        seed();
    }
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    uint64_t millis = (uint64_t)now.tv_sec * 1000 + (uint64_t)now.tv_nsec / 1000000;
    uint64_t random_a = next_random();
    uint64_t random_b = next_random();
    uint64_t high = (millis & 0xFFFFFFFFFFFFULL) << 16 | 0x7000 | (random_a & 0xFFF);
    uint64_t low = 0x8000000000000000ULL | (random_b & 0x3FFFFFFFFFFFFFFFULL);
    PyObject *text = PyUnicode_New(36, 127);
    if (text == NULL) {
        return NULL;
    }
    Py_UCS1 *out = PyUnicode_1BYTE_DATA(text);
    hex(out, high >> 32, 8);
    out[8] = '-';
    hex(out + 9, (high >> 16) & 0xFFFF, 4);
    out[13] = '-';
    hex(out + 14, high & 0xFFFF, 4);
    out[18] = '-';
    hex(out + 19, low >> 48, 4);
    out[23] = '-';
    hex(out + 24, low & 0xFFFFFFFFFFFFULL, 12);
    return text;
}

static PyMethodDef methods[] = {
    {"new_uid", new_uid, METH_NOARGS, new_uid_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_definition = {
    PyModuleDef_HEAD_INIT, "_uid", "Compiled UUIDv7 audit record ids (see logger.new_uid).", -1, methods,
};

PyMODINIT_FUNC PyInit__uid(void) {
    if (pthread_atfork(NULL, NULL, forget_seed_in_child) != 0) {
        PyErr_SetString(PyExc_OSError, "pthread_atfork failed");
        return NULL;
    }
    return PyModule_Create(&module_definition);
}
