/* The redaction fast path, compiled: whether a record's attributes (nested maps and lists included) surely need no
 * redaction. It walks the values once and applies, per value, exactly the rules of the Python reference
 * (redact.Redactor.values_clean with surely_clean as the pre-screen of every text): see the comment above
 * redact._SAFE_PUNCTUATION for why each test is conservative. tests/processors/test_screen_compiled.py checks that
 * both agree on generated values.
 *
 * It only reads. Each answer is True (clean), False (run the detectors: the full path) or None (a key whose
 * decision is not cached yet: the Python path decides and fills the caches). Everything is read under the GIL and
 * no Python code runs during the walk (exact dicts, lists, tuples and strs only), so no value can change under it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>
#include <string.h>

#define MAX_DEPTH 32
#define SMALLEST_CARD 1000000000000LL /* numbers from 10**12 up may be card numbers */

enum verdict { FAILED = -1, DIRTY = 0, CLEAN = 1, UNKNOWN = 2 };

/* The unpacked screen configuration (see Redactor._screen_config for its order and meaning). */
typedef struct {
    PyObject *attribute_decisions; /* dict: attribute key -> decision */
    PyObject *nested_decisions;    /* dict: nested map key -> decision */
    const unsigned char *classes;  /* 256 bytes: a (lower case), 9 (digit), d (joiner), b (safe), ! (other) */
    PyObject *timestamp_shapes;    /* frozenset of bytes: digit shapes of ISO 8601 timestamps */
    PyObject *clean;               /* set: values found clean by the detectors before */
    Py_ssize_t min_len, max_len;   /* shorter texts cannot hold a secret; longer ones are not screened */
    PyObject *skip, *scan;         /* the two decisions that let a value through (compared by identity) */
} screen;

static int unpack(PyObject *config, screen *out) {
    if (!PyTuple_CheckExact(config) || PyTuple_GET_SIZE(config) != 9) {
        PyErr_SetString(PyExc_TypeError, "screen configuration: a tuple of 9 items expected");
        return -1;
    }
    out->attribute_decisions = PyTuple_GET_ITEM(config, 0);
    out->nested_decisions = PyTuple_GET_ITEM(config, 1);
    PyObject *classes = PyTuple_GET_ITEM(config, 2);
    out->timestamp_shapes = PyTuple_GET_ITEM(config, 3);
    out->clean = PyTuple_GET_ITEM(config, 4);
    out->min_len = PyLong_AsSsize_t(PyTuple_GET_ITEM(config, 5));
    out->max_len = PyLong_AsSsize_t(PyTuple_GET_ITEM(config, 6));
    out->skip = PyTuple_GET_ITEM(config, 7);
    out->scan = PyTuple_GET_ITEM(config, 8);
    if (!PyDict_CheckExact(out->attribute_decisions) || !PyDict_CheckExact(out->nested_decisions) ||
        !PyBytes_CheckExact(classes) || PyBytes_GET_SIZE(classes) != 256 || !PyAnySet_Check(out->timestamp_shapes) ||
        !PySet_Check(out->clean) || out->min_len < 0 || out->max_len < 0) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_TypeError, "screen configuration: an item has the wrong type");
        }
        return -1;
    }
    out->classes = (const unsigned char *)PyBytes_AS_STRING(classes);
    return 0;
}

/* Whether `text` has the digit shape of a timestamp (digits as `9`), as redact._TIMESTAMP_SHAPES lists them. */
static int is_timestamp(const screen *config, const Py_UCS1 *text, Py_ssize_t length) {
    if (length < 10 || length > 40 || text[4] != '-') {
        return 0; /* every shape starts with `9999-99-99` and is at most 35 characters */
    }
    char shape[40];
    for (Py_ssize_t index = 0; index < length; index++) {
        shape[index] = (text[index] >= '0' && text[index] <= '9') ? '9' : (char)text[index];
    }
    PyObject *key = PyBytes_FromStringAndSize(shape, length);
    if (key == NULL) {
        return -1;
    }
    int found = PySet_Contains(config->timestamp_shapes, key);
    Py_DECREF(key);
    return found;
}

/* The letters the token detectors' fixed parts hold (see text_clean's end), a bit each: whether a text has one is
 * noted in its one pass, so the searches for those parts run only then. */
enum { HAS_X = 1, HAS_Y = 2, HAS_K = 4 };
static unsigned char letter_bits[256];

/* The digit chains of a text (redact._DIGIT_CHAIN_RE): whole all-digit words joined by single joiners, built word by
 * word; `suspect` is set once one of them could hold a number a detector matches (redact._chain_may_match). */
typedef struct {
    Py_ssize_t word_digits; /* digits in the current word (a run of letters and digits) */
    int word_letter;        /* ... and whether it holds a letter */
    Py_ssize_t chain_digits, chain_words;
    int suspect;
} chains;

static void chain_end(chains *state) {
    state->suspect |= state->chain_digits >= 13 || (state->chain_words >= 2 && state->chain_digits >= 9);
    state->chain_digits = state->chain_words = 0;
}

/* A word ends; `joiner_follows`: a single joiner may carry its chain on to the next word. */
static void word_end(chains *state, int joiner_follows) {
    if (state->word_letter) {
        chain_end(state);
    } else {
        state->chain_words++;
        state->chain_digits += state->word_digits;
        if (!joiner_follows) {
            chain_end(state);
        }
    }
    state->word_digits = 0;
    state->word_letter = 0;
}

/* surely_clean for one ASCII text: 1 when no detector can match, 0 when the detectors must decide, -1 on error. */
static int text_clean(const screen *config, const Py_UCS1 *text, Py_ssize_t length) {
    const unsigned char *classes = config->classes;
    unsigned char letters = 0;          /* HAS_X | HAS_Y | HAS_K, of the letters seen */
    unsigned char previous = 'b';       /* the class before the current position (`b`: a word boundary) */
    chains state = {0, 0, 0, 0, 0};
    for (Py_ssize_t index = 0; index < length; index++) {
        unsigned char kind = classes[text[index]];
        letters |= letter_bits[text[index]];
        if (kind == '!') {
            return is_timestamp(config, text, length);
        }
        if (kind == '9' || kind == 'a') {
            state.word_digits += kind == '9';
            state.word_letter |= kind == 'a';
        } else if (previous == '9' || previous == 'a') {
            word_end(&state, kind == 'd');
        } else {
            chain_end(&state); /* a joiner or boundary after another, or first: no chain goes on through it */
        }
        previous = kind;
    }
    if (previous == '9' || previous == 'a') {
        word_end(&state, 0);
    }
    chain_end(&state);
    const char *raw = (const char *)text;
    if (((letters & HAS_X) && (memmem(raw, length, "xox", 3) || memmem(raw, length, "xapp-", 5))) ||
        ((letters & HAS_Y) && memmem(raw, length, "ya29.", 5)) ||
        ((letters & HAS_K) && memmem(raw, length, "hooks.slack.com/services/", 25))) {
        return 0;
    }
    return !state.suspect;
}

static enum verdict value_clean(const screen *config, PyObject *value, int depth);

/* The entries of a map: each key's cached decision, then each value that is scanned. */
static enum verdict map_clean(const screen *config, PyObject *mapping, PyObject *decisions, int depth) {
    Py_ssize_t position = 0;
    PyObject *key, *value;
    while (PyDict_Next(mapping, &position, &key, &value)) {
        if (!PyUnicode_CheckExact(key)) {
            return DIRTY;
        }
        PyObject *decision = PyDict_GetItemWithError(decisions, key);
        if (decision == NULL) {
            return PyErr_Occurred() ? FAILED : UNKNOWN;
        }
        if (decision == config->skip) {
            continue;
        }
        if (decision != config->scan) {
            return DIRTY; /* a key rule applies */
        }
        enum verdict verdict = value_clean(config, value, depth);
        if (verdict != CLEAN) {
            return verdict;
        }
    }
    return CLEAN;
}

static enum verdict value_clean(const screen *config, PyObject *value, int depth) {
    PyTypeObject *kind = Py_TYPE(value);
    if (kind == &PyUnicode_Type) {
        Py_ssize_t length = PyUnicode_GET_LENGTH(value);
        if (length < config->min_len) {
            return CLEAN;
        }
        if (length <= config->max_len && PyUnicode_IS_ASCII(value)) {
            int clean = text_clean(config, PyUnicode_1BYTE_DATA(value), length);
            if (clean != 0) {
                return clean < 0 ? FAILED : CLEAN;
            }
        }
        int known = PySet_Contains(config->clean, value); /* found clean by the detectors before */
        return known < 0 ? FAILED : (known ? CLEAN : DIRTY);
    }
    if (kind == &PyBool_Type || value == Py_None) {
        return CLEAN;
    }
    if (kind == &PyLong_Type) {
        int overflow;
        long long number = PyLong_AsLongLongAndOverflow(value, &overflow);
        if (number == -1 && PyErr_Occurred()) {
            return FAILED;
        }
        return !overflow && -SMALLEST_CARD < number && number < SMALLEST_CARD ? CLEAN : DIRTY;
    }
    if (kind == &PyFloat_Type) {
        double number = PyFloat_AS_DOUBLE(value);
        return -(double)SMALLEST_CARD < number && number < (double)SMALLEST_CARD ? CLEAN : DIRTY;
    }
    if (kind == &PyDict_Type) {
        return depth >= MAX_DEPTH ? DIRTY : map_clean(config, value, config->nested_decisions, depth + 1);
    }
    if (kind == &PyList_Type || kind == &PyTuple_Type) {
        if (depth >= MAX_DEPTH) {
            return DIRTY;
        }
        Py_ssize_t count = PySequence_Fast_GET_SIZE(value);
        PyObject **items = PySequence_Fast_ITEMS(value);
        for (Py_ssize_t index = 0; index < count; index++) {
            enum verdict verdict = value_clean(config, items[index], depth + 1);
            if (verdict != CLEAN) {
                return verdict;
            }
        }
        return CLEAN;
    }
    return DIRTY;
}

static PyObject *answer(enum verdict verdict) {
    switch (verdict) {
    case CLEAN:
        Py_RETURN_TRUE;
    case DIRTY:
        Py_RETURN_FALSE;
    case UNKNOWN:
        Py_RETURN_NONE;
    default:
        return NULL;
    }
}

/* Both entry points: check the arguments, unpack the configuration, walk `args[0]` as attributes or as a value. */
static PyObject *screen_call(PyObject *const *args, Py_ssize_t nargs, int attributes) {
    screen config;
    if (nargs != 2 || (attributes && !PyDict_CheckExact(args[0]))) {
        PyErr_SetString(PyExc_TypeError, attributes ? "attributes_clean(attributes: dict, config: tuple)"
                                                    : "value_clean(value, config: tuple)");
        return NULL;
    }
    if (unpack(args[1], &config) < 0) {
        return NULL;
    }
    return answer(attributes ? map_clean(&config, args[0], config.attribute_decisions, 0)
                             : value_clean(&config, args[0], 0));
}

PyDoc_STRVAR(attributes_clean_doc,
    "attributes_clean(attributes: dict, config: tuple) -> bool | None\n\n"
    "Whether no redaction rule applies anywhere in a record's attributes; None when a key has no cached decision.");

static PyObject *attributes_clean(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs) {
    return screen_call(args, nargs, 1);
}

PyDoc_STRVAR(value_clean_doc,
    "value_clean(value: object, config: tuple) -> bool | None\n\n"
    "Whether no redaction rule applies to one value (a record's body) or anywhere inside it.");

static PyObject *value_clean_entry(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs) {
    return screen_call(args, nargs, 0);
}

/* ---- RedactionProcessor's direct stage, compiled: the same steps as redact.RedactionProcessor.direct_stage's
 * Python function, without an interpreter frame per record. ------------------------------------------------------ */

typedef struct {
    PyObject_HEAD
    PyObject *processor; /* the RedactionProcessor: its `redactor` and `_misses` are read per record */
    PyObject *next;      /* the next stage, called with the same fields */
    PyObject *is_clean;  /* Redactor.is_clean, the function the compiled screen stands for */
    long tries;          /* redact._FAST_PATH_TRIES */
    vectorcallfunc vectorcall;
} RedactionStage;

static PyObject *name_misses, *name_redactor, *name_is_clean, *name_screen_config, *zero;

/* Whether `redactor.is_clean(attributes)` holds: 1, 0, or -1 with an exception. When the method is Redactor's own
 * (not replaced on the instance or in a subclass), the compiled screen answers without it unless a key has no
 * cached decision yet; otherwise the method is called. */
static int redactor_clean(RedactionStage *self, PyObject *redactor, PyObject *attributes) {
    PyObject *method = PyObject_GetAttr(redactor, name_is_clean);
    if (method == NULL) {
        return -1;
    }
    if (PyMethod_Check(method) && PyMethod_GET_FUNCTION(method) == self->is_clean
        && PyMethod_GET_SELF(method) == redactor && PyDict_CheckExact(attributes)) {
        if (PyDict_GET_SIZE(attributes) == 0) {
            Py_DECREF(method);
            return 1;
        }
        PyObject *config = PyObject_GetAttr(redactor, name_screen_config);
        screen unpacked;
        if (config == NULL || unpack(config, &unpacked) < 0) {
            Py_XDECREF(config);
            Py_DECREF(method);
            return -1;
        }
        enum verdict verdict = map_clean(&unpacked, attributes, unpacked.attribute_decisions, 0);
        Py_DECREF(config);
        if (verdict != UNKNOWN) {
            Py_DECREF(method);
            return verdict == FAILED ? -1 : verdict == CLEAN;
        }
    }
    PyObject *result = PyObject_CallOneArg(method, attributes);
    Py_DECREF(method);
    if (result == NULL) {
        return -1;
    }
    int truth = PyObject_IsTrue(result);
    Py_DECREF(result);
    return truth;
}

static PyObject *redaction_stage_call(RedactionStage *self, PyObject *const *args, size_t nargsf,
                                      PyObject *kwnames) {
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs != 9 || kwnames != NULL) {
        PyErr_SetString(PyExc_TypeError, "a direct stage takes the 9 fields of a record, by position");
        return NULL;
    }
    PyObject *misses_object = PyObject_GetAttr(self->processor, name_misses);
    if (misses_object == NULL) {
        return NULL;
    }
    long misses = PyLong_AsLong(misses_object);
    Py_DECREF(misses_object);
    if (misses == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (misses >= self->tries) {
        Py_RETURN_FALSE; /* on_emit's pause after records that kept needing redaction */
    }
    /* Read per record, as on_emit reads it; anything unusual (an exception) takes the full path, as in on_emit. */
    PyObject *redactor = PyObject_GetAttr(self->processor, name_redactor);
    int clean = redactor == NULL ? -1 : redactor_clean(self, redactor, args[4]);
    Py_XDECREF(redactor);
    if (clean < 0) {
        if (!PyErr_ExceptionMatches(PyExc_Exception)) {
            return NULL;
        }
        PyErr_Clear();
        Py_RETURN_FALSE;
    }
    if (!clean) {
        Py_RETURN_FALSE;
    }
    if (misses != 0 && PyObject_SetAttr(self->processor, name_misses, zero) < 0) {
        return NULL;
    }
    return PyObject_Vectorcall(self->next, args, nargs, NULL);
}

static PyObject *redaction_stage_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    PyObject *processor, *next, *is_clean;
    long tries;
    static char *keywords[] = {"processor", "next_stage", "is_clean", "tries", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOl:RedactionStage", keywords, &processor, &next, &is_clean,
                                     &tries)) {
        return NULL;
    }
    if (!PyCallable_Check(next) || !PyFunction_Check(is_clean)) {
        PyErr_SetString(PyExc_TypeError, "RedactionStage: next_stage must be callable and is_clean a function");
        return NULL;
    }
    RedactionStage *self = (RedactionStage *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->processor = Py_NewRef(processor);
    self->next = Py_NewRef(next);
    self->is_clean = Py_NewRef(is_clean);
    self->tries = tries;
    self->vectorcall = (vectorcallfunc)redaction_stage_call;
    return (PyObject *)self;
}

static int redaction_stage_traverse(RedactionStage *self, visitproc visit, void *arg) {
    Py_VISIT(self->processor);
    Py_VISIT(self->next);
    Py_VISIT(self->is_clean);
    return 0;
}

static int redaction_stage_clear(RedactionStage *self) {
    Py_CLEAR(self->processor);
    Py_CLEAR(self->next);
    Py_CLEAR(self->is_clean);
    return 0;
}

static void redaction_stage_dealloc(RedactionStage *self) {
    PyObject_GC_UnTrack(self);
    redaction_stage_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

PyDoc_STRVAR(redaction_stage_doc,
    "RedactionStage(processor, next_stage, is_clean, tries)\n\n"
    "RedactionProcessor's direct stage: called with a record's 9 fields, it answers False (take on_emit's path)\n"
    "unless the processor's redactor finds the attributes clean, and then hands the fields to `next_stage`.");

static PyTypeObject RedactionStageType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "otel_audit.processors._screen.RedactionStage",
    .tp_basicsize = sizeof(RedactionStage),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = redaction_stage_doc,
    .tp_new = redaction_stage_new,
    .tp_traverse = (traverseproc)redaction_stage_traverse,
    .tp_clear = (inquiry)redaction_stage_clear,
    .tp_dealloc = (destructor)redaction_stage_dealloc,
    .tp_vectorcall_offset = offsetof(RedactionStage, vectorcall),
    .tp_call = PyVectorcall_Call,
};

static PyMethodDef methods[] = {
    {"attributes_clean", (PyCFunction)(void (*)(void))attributes_clean, METH_FASTCALL, attributes_clean_doc},
    {"value_clean", (PyCFunction)(void (*)(void))value_clean_entry, METH_FASTCALL, value_clean_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_definition = {
    PyModuleDef_HEAD_INIT, "otel_audit.processors._screen",
    "The redaction fast path, compiled (see otel_audit.processors.redact).", -1, methods,
};

PyMODINIT_FUNC PyInit__screen(void) {
    letter_bits['x'] = HAS_X;
    letter_bits['y'] = HAS_Y;
    letter_bits['k'] = HAS_K;
    name_misses = PyUnicode_InternFromString("_misses");
    name_redactor = PyUnicode_InternFromString("redactor");
    name_is_clean = PyUnicode_InternFromString("is_clean");
    name_screen_config = PyUnicode_InternFromString("_screen_config");
    zero = PyLong_FromLong(0);
    if (name_misses == NULL || name_redactor == NULL || name_is_clean == NULL || name_screen_config == NULL
        || zero == NULL || PyType_Ready(&RedactionStageType) < 0) {
        return NULL;
    }
    PyObject *module = PyModule_Create(&module_definition);
    if (module == NULL || PyModule_AddObjectRef(module, "RedactionStage", (PyObject *)&RedactionStageType) < 0) {
        Py_XDECREF(module);
        return NULL;
    }
    return module;
}
