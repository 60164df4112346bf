/* The audit middlewares' per-request bookkeeping, compiled. The reference code, and the fallback without a C
 * compiler, is Python: RequestState, the request ids and emit_request_event in _http.py; begin_request,
 * enter_request_context, status_recorder, route_of, AuditMiddleware._python_start and _python_finish in asgi.py.
 * Under uvicorn the Python versions executed about 28,000 of the 71,000 instructions the middleware and its event
 * added to a plain FastAPI request (callgrind; `python -m benchmarks.bench_fastapi --server-instructions`).
 *
 * - RequestState: what the middleware learns about one request (the dataclass's fields, positional or keyword).
 * - next_request_id / request_id_from: ids "<random prefix><12+ hex digits of a counter>", seeded by Python.
 * - begin_request(scope, request_id_header): method, path, request id, peer address, user agent, start time.
 * - enter_request_context(state): the request's AuditContext set in the audit context variable; the token.
 * - StatusRecorder(send, state): the ASGI `send` that notes the response status on the way out.
 * - RequestStarter: the start of a request in AuditMiddleware.__call__ (state, send, token), Python resolvers
 *   called only when the options or the scope give them work.
 * - route_of, emit_request_event and RequestFinisher: the route template, the event, and the end of a request.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <structmember.h>

#define MAX_HEADER_VALUE 512 /* _http._MAX_HEADER_VALUE */
#define MAX_REQUEST_ID 128   /* _http._REQUEST_ID_RE */
#define CONTEXT_FIELDS 7     /* context.AuditContext */

/* -- RequestState ------------------------------------------------------------------------------------------ */

enum {
    F_METHOD, F_PATH, F_REQUEST_ID, F_CLIENT_ADDRESS, F_USER_AGENT, F_SESSION_ID, F_ACTOR, F_TENANT, F_STARTED_NS,
    F_ROOT_PATH, F_ROUTE_TEMPLATE, F_PATH_PARAMS, F_STATUS, F_ERROR, F_EMITTED, FIELD_COUNT
};
#define REQUIRED_FIELDS 9

static char *field_names[] = {
    "method", "path", "request_id", "client_address", "user_agent", "session_id", "actor", "tenant", "started_ns",
    "root_path", "route_template", "path_params", "status", "error", "emitted", NULL,
};

typedef struct {
    PyObject_HEAD
    PyObject *fields[FIELD_COUNT];
} RequestState;

static PyTypeObject RequestStateType;
static PyObject *empty_text; /* "" */

static RequestState *state_alloc(PyTypeObject *type) {
    RequestState *state = (RequestState *)type->tp_alloc(type, 0);
    if (state == NULL) {
        return NULL;
    }
    for (int index = REQUIRED_FIELDS; index < FIELD_COUNT; index++) {
        state->fields[index] = Py_NewRef(Py_None);
    }
    Py_SETREF(state->fields[F_ROOT_PATH], Py_NewRef(empty_text));
    Py_SETREF(state->fields[F_EMITTED], Py_NewRef(Py_False));
    return state;
}

static PyObject *state_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    PyObject *given[FIELD_COUNT] = {NULL};
    if (!PyArg_ParseTupleAndKeywords(
            args, kwargs, "OOOOOOOOO|OOOOOO:RequestState", field_names, &given[0], &given[1], &given[2], &given[3],
            &given[4], &given[5], &given[6], &given[7], &given[8], &given[9], &given[10], &given[11], &given[12],
            &given[13], &given[14])) {
        return NULL;
    }
    RequestState *state = state_alloc(type);
    if (state == NULL) {
        return NULL;
    }
    for (int index = 0; index < FIELD_COUNT; index++) {
        if (given[index] != NULL) {
            Py_XSETREF(state->fields[index], Py_NewRef(given[index]));
        }
    }
    return (PyObject *)state;
}

static int state_traverse(RequestState *state, visitproc visit, void *arg) {
    for (int index = 0; index < FIELD_COUNT; index++) {
        Py_VISIT(state->fields[index]);
    }
    return 0;
}

static int state_clear(RequestState *state) {
    for (int index = 0; index < FIELD_COUNT; index++) {
        Py_CLEAR(state->fields[index]);
    }
    return 0;
}

static void state_dealloc(RequestState *state) {
    PyObject_GC_UnTrack(state);
    state_clear(state);
    Py_TYPE(state)->tp_free((PyObject *)state);
}

static PyObject *state_repr(RequestState *state) {
    return PyUnicode_FromFormat("RequestState(method=%R, path=%R, request_id=%R, status=%R)",
                                state->fields[F_METHOD] ? state->fields[F_METHOD] : Py_None,
                                state->fields[F_PATH] ? state->fields[F_PATH] : Py_None,
                                state->fields[F_REQUEST_ID] ? state->fields[F_REQUEST_ID] : Py_None,
                                state->fields[F_STATUS] ? state->fields[F_STATUS] : Py_None);
}

#define FIELD_MEMBER(name, index) \
    {name, T_OBJECT_EX, offsetof(RequestState, fields) + (index) * sizeof(PyObject *), 0, NULL}

static PyMemberDef state_members[] = {
    FIELD_MEMBER("method", F_METHOD),
    FIELD_MEMBER("path", F_PATH),
    FIELD_MEMBER("request_id", F_REQUEST_ID),
    FIELD_MEMBER("client_address", F_CLIENT_ADDRESS),
    FIELD_MEMBER("user_agent", F_USER_AGENT),
    FIELD_MEMBER("session_id", F_SESSION_ID),
    FIELD_MEMBER("actor", F_ACTOR),
    FIELD_MEMBER("tenant", F_TENANT),
    FIELD_MEMBER("started_ns", F_STARTED_NS),
    FIELD_MEMBER("root_path", F_ROOT_PATH),
    FIELD_MEMBER("route_template", F_ROUTE_TEMPLATE),
    FIELD_MEMBER("path_params", F_PATH_PARAMS),
    FIELD_MEMBER("status", F_STATUS),
    FIELD_MEMBER("error", F_ERROR),
    FIELD_MEMBER("emitted", F_EMITTED),
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject RequestStateType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "otel_audit.instrumentation._request.RequestState",
    .tp_doc = PyDoc_STR("What the middleware learns about one request, filled in as the request runs."),
    .tp_basicsize = sizeof(RequestState),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = state_new,
    .tp_traverse = (traverseproc)state_traverse,
    .tp_clear = (inquiry)state_clear,
    .tp_dealloc = (destructor)state_dealloc,
    .tp_repr = (reprfunc)state_repr,
    .tp_members = state_members,
};

/* -- request ids --------------------------------------------------------------------------------------------- */

static PyObject *id_prefix; /* set by seed_request_ids */
static uint64_t id_counter;

static PyObject *seed_request_ids(PyObject *module, PyObject *args) {
    PyObject *prefix;
    unsigned long long start;
    if (!PyArg_ParseTuple(args, "UK:seed_request_ids", &prefix, &start)) {
        return NULL;
    }
    if (!PyUnicode_IS_ASCII(prefix)) {
        PyErr_SetString(PyExc_ValueError, "seed_request_ids: the prefix must be ASCII");
        return NULL;
    }
    Py_XSETREF(id_prefix, Py_NewRef(prefix));
    id_counter = start;
    Py_RETURN_NONE;
}

static PyObject *next_request_id(PyObject *module, PyObject *unused) {
    static const char hex_digits[] = "0123456789abcdef";
    if (id_prefix == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "next_request_id: seed_request_ids was not called");
        return NULL;
    }
    uint64_t value = id_counter++;
    int digits = 12; /* f"{counter:012x}" */
    while (digits < 16 && (value >> (4 * digits)) != 0) {
        digits++;
    }
    Py_ssize_t prefix_length = PyUnicode_GET_LENGTH(id_prefix);
    PyObject *text = PyUnicode_New(prefix_length + digits, 127);
    if (text == NULL) {
        return NULL;
    }
    Py_UCS1 *out = PyUnicode_1BYTE_DATA(text);
    memcpy(out, PyUnicode_1BYTE_DATA(id_prefix), (size_t)prefix_length);
    for (int index = digits - 1; index >= 0; index--) {
        out[prefix_length + index] = (Py_UCS1)hex_digits[value & 0xF];
        value >>= 4;
    }
    return text;
}

static int is_request_id_char(unsigned char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
           c == ':' || c == '@' || c == '/' || c == '+' || c == '=' || c == '-';
}

static int is_request_id(const unsigned char *data, Py_ssize_t length) {
    if (length < 1 || length > MAX_REQUEST_ID) {
        return 0;
    }
    for (Py_ssize_t index = 0; index < length; index++) {
        if (!is_request_id_char(data[index])) {
            return 0;
        }
    }
    return 1;
}

static PyObject *request_id_from(PyObject *module, PyObject *value) {
    if (PyUnicode_Check(value) && PyUnicode_IS_ASCII(value) &&
        is_request_id(PyUnicode_1BYTE_DATA(value), PyUnicode_GET_LENGTH(value))) {
        return Py_NewRef(value);
    }
    if (value != Py_None && !PyUnicode_Check(value)) {
        PyErr_Format(PyExc_TypeError, "request_id_from: expected a string or None, got %.100s", Py_TYPE(value)->tp_name);
        return NULL;
    }
    return next_request_id(module, NULL);
}

/* -- begin_request ------------------------------------------------------------------------------------------- */

static PyObject *str_user, *str_state;
static PyObject *str_method, *str_path, *str_headers, *str_client, *str_root_path, *str_type, *str_status,
    *str_response_start;
static PyObject *perf_counter_ns;

static PyObject *required(PyObject *scope, PyObject *key) {
    PyObject *value = PyDict_GetItemWithError(scope, key);
    if (value == NULL && !PyErr_Occurred()) {
        PyErr_SetObject(PyExc_KeyError, key);
    }
    return value;
}

/* Text of a header value (latin-1, like bytes.decode("latin-1")), at most `limit` characters. */
static PyObject *header_text(PyObject *value, Py_ssize_t limit) {
    if (!PyBytes_Check(value)) {
        PyErr_Format(PyExc_TypeError, "ASGI header values must be bytes, got %.100s", Py_TYPE(value)->tp_name);
        return NULL;
    }
    Py_ssize_t length = PyBytes_GET_SIZE(value);
    return PyUnicode_DecodeLatin1(PyBytes_AS_STRING(value), length < limit ? length : limit, NULL);
}

static int is_header(PyObject *name, const char *wanted, Py_ssize_t wanted_length) {
    return PyBytes_Check(name) && PyBytes_GET_SIZE(name) == wanted_length &&
           memcmp(PyBytes_AS_STRING(name), wanted, (size_t)wanted_length) == 0;
}

/* The request id and user agent headers (the last of each wins, as in the Python loop): new references or NULL. */
static int read_headers(PyObject *headers, PyObject *request_id_header, PyObject **request_id, PyObject **user_agent) {
    PyObject *list = PySequence_Fast(headers, "scope['headers'] must be iterable");
    if (list == NULL) {
        return -1;
    }
    const char *id_name = PyBytes_AS_STRING(request_id_header);
    Py_ssize_t id_name_length = PyBytes_GET_SIZE(request_id_header);
    Py_ssize_t count = PySequence_Fast_GET_SIZE(list);
    for (Py_ssize_t index = 0; index < count; index++) {
        PyObject *pair = PySequence_Fast(PySequence_Fast_GET_ITEM(list, index), "ASGI headers must be pairs");
        if (pair == NULL) {
            Py_DECREF(list);
            return -1;
        }
        if (PySequence_Fast_GET_SIZE(pair) != 2) {
            Py_DECREF(pair);
            Py_DECREF(list);
            PyErr_SetString(PyExc_ValueError, "ASGI headers must be (name, value) pairs");
            return -1;
        }
        PyObject *name = PySequence_Fast_GET_ITEM(pair, 0), *value = PySequence_Fast_GET_ITEM(pair, 1);
        if (is_header(name, id_name, id_name_length)) {
            Py_XSETREF(*request_id, Py_NewRef(value));
        } else if (is_header(name, "user-agent", 10)) {
            Py_XSETREF(*user_agent, Py_NewRef(value));
        }
        Py_DECREF(pair);
    }
    Py_DECREF(list);
    return 0;
}

static PyObject *request_id_of(PyObject *header_value) {
    if (header_value != NULL) {
        if (!PyBytes_Check(header_value)) {
            return header_text(header_value, MAX_REQUEST_ID); /* raises, as bytes.decode would be missing */
        }
        const unsigned char *data = (const unsigned char *)PyBytes_AS_STRING(header_value);
        if (is_request_id(data, PyBytes_GET_SIZE(header_value))) {
            return PyUnicode_DecodeASCII((const char *)data, PyBytes_GET_SIZE(header_value), NULL);
        }
    }
    return next_request_id(NULL, NULL);
}

static PyObject *client_address_of(PyObject *scope) {
    PyObject *client = PyDict_GetItemWithError(scope, str_client);
    if (client == NULL) {
        return PyErr_Occurred() ? NULL : Py_NewRef(Py_None);
    }
    int present = PyObject_IsTrue(client);
    if (present <= 0) {
        return present < 0 ? NULL : Py_NewRef(Py_None);
    }
    PyObject *address = PySequence_GetItem(client, 0);
    if (address != NULL && PyUnicode_Check(address) && PyUnicode_GET_LENGTH(address) > MAX_HEADER_VALUE) {
        Py_SETREF(address, PyUnicode_Substring(address, 0, MAX_HEADER_VALUE));
    }
    return address;
}

PyDoc_STRVAR(begin_request_doc,
             "begin_request(scope, request_id_header) -> RequestState\n\n"
             "An ASGI request's method, path, request id, peer address, user agent and start time (asgi.begin_request).");

static PyObject *begin_request(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyDict_Check(args[0]) || !PyBytes_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "begin_request(scope: dict, request_id_header: bytes)");
        return NULL;
    }
    PyObject *scope = args[0];
    PyObject *method = required(scope, str_method);
    PyObject *path = method ? required(scope, str_path) : NULL;
    PyObject *headers = path ? required(scope, str_headers) : NULL;
    if (headers == NULL) {
        return NULL;
    }
    PyObject *request_id_value = NULL, *user_agent_value = NULL;
    if (read_headers(headers, args[1], &request_id_value, &user_agent_value) < 0) {
        return NULL;
    }
    RequestState *state = state_alloc(&RequestStateType);
    if (state == NULL) {
        Py_XDECREF(request_id_value);
        Py_XDECREF(user_agent_value);
        return NULL;
    }
    PyObject **fields = state->fields;
    fields[F_METHOD] = Py_NewRef(method);
    fields[F_PATH] = Py_NewRef(path);
    fields[F_REQUEST_ID] = request_id_of(request_id_value);
    fields[F_USER_AGENT] =
        user_agent_value == NULL ? Py_NewRef(Py_None) : header_text(user_agent_value, MAX_HEADER_VALUE);
    Py_XDECREF(request_id_value);
    Py_XDECREF(user_agent_value);
    fields[F_CLIENT_ADDRESS] = client_address_of(scope);
    fields[F_SESSION_ID] = Py_NewRef(Py_None);
    fields[F_ACTOR] = Py_NewRef(Py_None);
    fields[F_TENANT] = Py_NewRef(Py_None);
    PyObject *root_path = PyDict_GetItemWithError(scope, str_root_path);
    if (root_path != NULL) {
        Py_SETREF(fields[F_ROOT_PATH], Py_NewRef(root_path));
    }
    if (fields[F_REQUEST_ID] == NULL || fields[F_USER_AGENT] == NULL || fields[F_CLIENT_ADDRESS] == NULL ||
        PyErr_Occurred() || (fields[F_STARTED_NS] = PyObject_CallNoArgs(perf_counter_ns)) == NULL) {
        Py_DECREF(state);
        return NULL;
    }
    return (PyObject *)state;
}

/* -- enter_request_context ----------------------------------------------------------------------------------- */

static PyObject *context_var;  /* context._current */
static PyTypeObject *context_type; /* context.AuditContext */

static PyObject *configure_request_context(PyObject *module, PyObject *args) {
    PyObject *variable, *type;
    if (!PyArg_ParseTuple(args, "O!O!:configure_request_context", &PyContextVar_Type, &variable, &PyType_Type, &type)) {
        return NULL;
    }
    if (!PyType_IsSubtype((PyTypeObject *)type, &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "configure_request_context: the context type must be a tuple subclass");
        return NULL;
    }
    /* enter_request_context fills the tuple in this order. */
    PyObject *fields = PyObject_GetAttrString(type, "_fields");
    PyObject *expected = Py_BuildValue("(sssssss)", "actor", "tenant_id", "request_id", "session_id",
                                       "impersonator_id", "client_address", "user_agent");
    int same = fields && expected ? PyObject_RichCompareBool(fields, expected, Py_EQ) : -1;
    Py_XDECREF(fields);
    Py_XDECREF(expected);
    if (same <= 0) {
        if (same == 0) {
            PyErr_SetString(PyExc_ValueError, "configure_request_context: AuditContext's fields are not the expected ones");
        }
        return NULL;
    }
    Py_XSETREF(context_var, Py_NewRef(variable));
    Py_XSETREF(context_type, (PyTypeObject *)Py_NewRef(type));
    Py_RETURN_NONE;
}

PyDoc_STRVAR(enter_request_context_doc,
             "enter_request_context(state) -> Token\n\n"
             "Set the request's AuditContext (impersonator inherited); reset the variable with the token.");

static PyObject *enter_request_context(PyObject *module, PyObject *arg) {
    if (context_var == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "enter_request_context: configure_request_context was not called");
        return NULL;
    }
    if (!PyObject_TypeCheck(arg, &RequestStateType)) {
        PyErr_SetString(PyExc_TypeError, "enter_request_context: expected a RequestState");
        return NULL;
    }
    PyObject **fields = ((RequestState *)arg)->fields;
    PyObject *current;
    if (PyContextVar_Get(context_var, NULL, &current) < 0) {
        return NULL;
    }
    if (current == NULL || !PyTuple_Check(current) || PyTuple_GET_SIZE(current) != CONTEXT_FIELDS) {
        Py_XDECREF(current);
        PyErr_SetString(PyExc_TypeError, "enter_request_context: the audit context variable holds no AuditContext");
        return NULL;
    }
    PyObject *context = context_type->tp_alloc(context_type, CONTEXT_FIELDS);
    if (context == NULL) {
        Py_DECREF(current);
        return NULL;
    }
    PyObject *values[CONTEXT_FIELDS] = {
        fields[F_ACTOR], fields[F_TENANT], fields[F_REQUEST_ID], fields[F_SESSION_ID], PyTuple_GET_ITEM(current, 4),
        fields[F_CLIENT_ADDRESS], fields[F_USER_AGENT],
    };
    for (int index = 0; index < CONTEXT_FIELDS; index++) {
        PyTuple_SET_ITEM(context, index, Py_NewRef(values[index] ? values[index] : Py_None));
    }
    Py_DECREF(current);
    PyObject *token = PyContextVar_Set(context_var, context);
    Py_DECREF(context);
    return token;
}

/* -- StatusRecorder ------------------------------------------------------------------------------------------ */

typedef struct {
    PyObject_HEAD
    PyObject *send;
    RequestState *state;
    vectorcallfunc vectorcall;
} StatusRecorder;

static PyObject *message_type(PyObject *message) {
    if (PyDict_Check(message)) {
        PyObject *type = required(message, str_type);
        return type ? Py_NewRef(type) : NULL;
    }
    return PyObject_GetItem(message, str_type);
}

static PyObject *recorder_call(StatusRecorder *recorder, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    if (PyVectorcall_NARGS(nargsf) != 1 || kwnames != NULL) {
        PyErr_SetString(PyExc_TypeError, "send(message) takes one message");
        return NULL;
    }
    PyObject *type = message_type(args[0]);
    if (type == NULL) {
        return NULL;
    }
    int is_start = type == str_response_start ||
                   (PyUnicode_Check(type) && PyUnicode_Compare(type, str_response_start) == 0);
    Py_DECREF(type);
    if (is_start) {
        PyObject *status = PyObject_GetItem(args[0], str_status);
        if (status == NULL) {
            return NULL;
        }
        Py_SETREF(recorder->state->fields[F_STATUS], status);
    }
    return PyObject_Vectorcall(recorder->send, args, 1, NULL);
}

static PyObject *make_recorder(PyTypeObject *type, PyObject *send, PyObject *state) {
    if (!PyObject_TypeCheck(state, &RequestStateType)) {
        PyErr_SetString(PyExc_TypeError, "StatusRecorder(send, state): state must be a RequestState");
        return NULL;
    }
    StatusRecorder *recorder = (StatusRecorder *)type->tp_alloc(type, 0);
    if (recorder == NULL) {
        return NULL;
    }
    recorder->send = Py_NewRef(send);
    recorder->state = (RequestState *)Py_NewRef(state);
    recorder->vectorcall = (vectorcallfunc)recorder_call;
    return (PyObject *)recorder;
}

static PyObject *recorder_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    PyObject *send, *state;
    if ((kwargs != NULL && PyDict_GET_SIZE(kwargs) != 0) ||
        !PyArg_ParseTuple(args, "OO:StatusRecorder", &send, &state)) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_TypeError, "StatusRecorder(send, state) takes no keyword arguments");
        }
        return NULL;
    }
    return make_recorder(type, send, state);
}

static PyObject *recorder_vectorcall_new(PyObject *type, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    if (PyVectorcall_NARGS(nargsf) != 2 || kwnames != NULL) {
        PyErr_SetString(PyExc_TypeError, "StatusRecorder(send, state) takes two positional arguments");
        return NULL;
    }
    return make_recorder((PyTypeObject *)type, args[0], args[1]);
}

static int recorder_traverse(StatusRecorder *recorder, visitproc visit, void *arg) {
    Py_VISIT(recorder->send);
    Py_VISIT(recorder->state);
    return 0;
}

static int recorder_clear(StatusRecorder *recorder) {
    Py_CLEAR(recorder->send);
    Py_CLEAR(recorder->state);
    return 0;
}

static void recorder_dealloc(StatusRecorder *recorder) {
    PyObject_GC_UnTrack(recorder);
    recorder_clear(recorder);
    Py_TYPE(recorder)->tp_free((PyObject *)recorder);
}

static PyTypeObject StatusRecorderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "otel_audit.instrumentation._request.StatusRecorder",
    .tp_doc = PyDoc_STR("StatusRecorder(send, state): an ASGI send that notes the response status in the state."),
    .tp_basicsize = sizeof(StatusRecorder),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_new = recorder_new,
    .tp_vectorcall = recorder_vectorcall_new,
    .tp_vectorcall_offset = offsetof(StatusRecorder, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_traverse = (traverseproc)recorder_traverse,
    .tp_clear = (inquiry)recorder_clear,
    .tp_dealloc = (destructor)recorder_dealloc,
};

/* -- RequestStarter ------------------------------------------------------------------------------------------ */

/* The start of AuditMiddleware.__call__, compiled: the request's state (begin_request), completed by the Python
 * `resolve` where the options or the scope give a resolver work (asgi.AuditMiddleware._resolve), the `send` that
 * notes the status (the Python `strict_send` in strict mode), the audit context entered and the state put into
 * the scope: (state, send, token), as AuditMiddleware._python_start answers. */
typedef struct {
    PyObject_HEAD
    PyObject *request_id_header, *state_key, *resolve, *strict_send;
    int resolves_early; /* trusted proxies, a session or tenant resolver, a session cookie, or a custom actor resolver */
    vectorcallfunc vectorcall;
} RequestStarter;

/* Whether the default actor resolver finds anything: scope["user"] or a non-empty scope["state"] (asgi.actor_of). */
static int has_user(PyObject *scope) {
    PyObject *user = PyDict_GetItemWithError(scope, str_user);
    if (user != NULL && user != Py_None) {
        return 1;
    }
    PyObject *request_state = user == NULL && PyErr_Occurred() ? NULL : PyDict_GetItemWithError(scope, str_state);
    if (PyErr_Occurred()) {
        return -1;
    }
    return request_state == NULL ? 0 : PyObject_IsTrue(request_state);
}

static PyObject *starter_call(RequestStarter *starter, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    if (PyVectorcall_NARGS(nargsf) != 3 || kwnames != NULL || !PyDict_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "RequestStarter(scope: dict, send, strict)");
        return NULL;
    }
    PyObject *scope = args[0], *send = args[1];
    int strict = PyObject_IsTrue(args[2]);
    int resolve = strict < 0 ? -1 : starter->resolves_early ? 1 : has_user(scope);
    if (resolve < 0) {
        return NULL;
    }
    PyObject *state = begin_request(NULL, (PyObject *[]){scope, starter->request_id_header}, 2);
    if (state == NULL) {
        return NULL;
    }
    PyObject *done = resolve ? PyObject_Vectorcall(starter->resolve, (PyObject *[]){scope, state}, 2, NULL)
                             : Py_NewRef(Py_None);
    PyObject *wrapper = NULL, *token = NULL, *result = NULL;
    if (done != NULL) {
        wrapper = strict ? PyObject_Vectorcall(starter->strict_send, (PyObject *[]){scope, state, send}, 3, NULL)
                         : make_recorder(&StatusRecorderType, send, state);
    }
    if (wrapper != NULL) {
        token = enter_request_context(NULL, state);
    }
    if (token != NULL && PyDict_SetItem(scope, starter->state_key, state) == 0) {
        result = PyTuple_Pack(3, state, wrapper, token);
    }
    if (result == NULL && token != NULL) {
        PyObject *type, *value, *traceback;
        PyErr_Fetch(&type, &value, &traceback);
        if (PyContextVar_Reset(context_var, token) < 0) {
            PyErr_Clear();
        }
        PyErr_Restore(type, value, traceback);
    }
    Py_XDECREF(done);
    Py_XDECREF(wrapper);
    Py_XDECREF(token);
    Py_DECREF(state);
    return result;
}

static PyObject *starter_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    PyObject *request_id_header, *state_key, *resolve, *strict_send;
    int resolves_early;
    if (!PyArg_ParseTuple(args, "O!UOOp:RequestStarter", &PyBytes_Type, &request_id_header, &state_key, &resolve,
                          &strict_send, &resolves_early)) {
        return NULL;
    }
    RequestStarter *starter = (RequestStarter *)type->tp_alloc(type, 0);
    if (starter == NULL) {
        return NULL;
    }
    starter->request_id_header = Py_NewRef(request_id_header);
    starter->state_key = Py_NewRef(state_key);
    starter->resolve = Py_NewRef(resolve);
    starter->strict_send = Py_NewRef(strict_send);
    starter->resolves_early = resolves_early;
    starter->vectorcall = (vectorcallfunc)starter_call;
    return (PyObject *)starter;
}

static int starter_traverse(RequestStarter *starter, visitproc visit, void *arg) {
    Py_VISIT(starter->request_id_header);
    Py_VISIT(starter->state_key);
    Py_VISIT(starter->resolve);
    Py_VISIT(starter->strict_send);
    return 0;
}

static int starter_clear(RequestStarter *starter) {
    Py_CLEAR(starter->request_id_header);
    Py_CLEAR(starter->state_key);
    Py_CLEAR(starter->resolve);
    Py_CLEAR(starter->strict_send);
    return 0;
}

static void starter_dealloc(RequestStarter *starter) {
    PyObject_GC_UnTrack(starter);
    starter_clear(starter);
    Py_TYPE(starter)->tp_free((PyObject *)starter);
}

static PyTypeObject RequestStarterType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "otel_audit.instrumentation._request.RequestStarter",
    .tp_doc = PyDoc_STR("RequestStarter(request_id_header, state_key, resolve, strict_send, resolves_early)"
                        "(scope, send, strict) -> (state, send, token): AuditMiddleware._python_start, compiled."),
    .tp_basicsize = sizeof(RequestStarter),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_new = starter_new,
    .tp_vectorcall_offset = offsetof(RequestStarter, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_traverse = (traverseproc)starter_traverse,
    .tp_clear = (inquiry)starter_clear,
    .tp_dealloc = (destructor)starter_dealloc,
};

/* -- route_of and emit_request_event ------------------------------------------------------------------------ */

static PyObject *str_route, *str_path_params, *str_path_format, *str_methods, *str_routes, *str_action,
    *str_resource_type, *str_resource_id_param, *str_route_audit, *str_duration_ms;
static PyObject *event_emit;            /* logger.emit_positional */
static PyObject *python_event;          /* _http.python_emit_request_event: requests that ended in an exception */
static PyObject *outcome_success, *outcome_failure, *outcome_denied, *anonymous_actor, *status_500;

/* getattr(obj, name, None), as a new reference or NULL (with no error set when it is merely missing). */
static PyObject *optional_attr(PyObject *obj, PyObject *name) {
    PyObject *value = PyObject_GetAttr(obj, name);
    if (value == NULL && PyErr_ExceptionMatches(PyExc_AttributeError)) {
        PyErr_Clear();
    }
    return value;
}

PyDoc_STRVAR(route_of_doc,
             "route_of(scope, root_path) -> (template, path_params)\n\n"
             "The matched route template (mount prefix included) and path parameters (asgi.python_route_of).");

static PyObject *route_of(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyDict_Check(args[0]) || !PyUnicode_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "route_of(scope: dict, root_path: str)");
        return NULL;
    }
    PyObject *scope = args[0];
    PyObject *params = PyDict_GetItemWithError(scope, str_path_params);
    PyObject *route = params || !PyErr_Occurred() ? PyDict_GetItemWithError(scope, str_route) : NULL;
    if (PyErr_Occurred()) {
        return NULL;
    }
    params = params ? params : Py_None;
    if (route == NULL || route == Py_None) {
        return PyTuple_Pack(2, Py_None, params);
    }
    /* getattr(route, "path_format", None) or getattr(route, "path", None) */
    PyObject *format = optional_attr(route, str_path_format);
    int truth = format ? PyObject_IsTrue(format) : 0;
    if (truth <= 0) {
        Py_XDECREF(format);
        format = PyErr_Occurred() ? NULL : optional_attr(route, str_path);
        if (PyErr_Occurred()) {
            return NULL;
        }
    }
    if (format == NULL || !PyUnicode_Check(format)) {
        Py_XDECREF(format);
        return PyTuple_Pack(2, Py_None, params);
    }
    PyObject *scope_root = PyDict_GetItemWithError(scope, str_root_path);
    if (scope_root == NULL && PyErr_Occurred()) {
        Py_DECREF(format);
        return NULL;
    }
    PyObject *template;
    if (scope_root == NULL || !PyUnicode_Check(scope_root) ||
        PyUnicode_GET_LENGTH(scope_root) <= PyUnicode_GET_LENGTH(args[1])) {
        /* No mount between the middleware and the route: the template itself (or "/" for an empty one). */
        template = PyUnicode_GET_LENGTH(format) ? Py_NewRef(format) : PyUnicode_FromString("/");
    } else {
        PyObject *prefix = PyUnicode_Substring(scope_root, PyUnicode_GET_LENGTH(args[1]), PY_SSIZE_T_MAX);
        Py_ssize_t length = prefix ? PyUnicode_GET_LENGTH(prefix) : 0;
        while (prefix && length > 0 && PyUnicode_READ_CHAR(prefix, length - 1) == '/') {
            length--;
        }
        PyObject *stripped = prefix ? PyUnicode_Substring(prefix, 0, length) : NULL;
        Py_XDECREF(prefix);
        template = stripped ? PyUnicode_Concat(stripped, format) : NULL;
        Py_XDECREF(stripped);
        if (template != NULL && PyUnicode_GET_LENGTH(template) == 0) {
            Py_SETREF(template, PyUnicode_FromString("/"));
        }
    }
    Py_DECREF(format);
    if (template == NULL) {
        return NULL;
    }
    PyObject *result = PyTuple_Pack(2, template, params);
    Py_DECREF(template);
    return result;
}

static PyObject *configure_request_events(PyObject *module, PyObject *args) {
    PyObject *emit, *python, *success, *failure, *denied, *anonymous;
    if (!PyArg_ParseTuple(args, "OOOOOO:configure_request_events", &emit, &python, &success, &failure, &denied,
                          &anonymous)) {
        return NULL;
    }
    Py_XSETREF(event_emit, Py_NewRef(emit));
    Py_XSETREF(python_event, Py_NewRef(python));
    Py_XSETREF(outcome_success, Py_NewRef(success));
    Py_XSETREF(outcome_failure, Py_NewRef(failure));
    Py_XSETREF(outcome_denied, Py_NewRef(denied));
    Py_XSETREF(anonymous_actor, Py_NewRef(anonymous));
    Py_RETURN_NONE;
}

static int is_denied(long status) {
    return status == 401 || status == 403; /* _http.DENIED_STATUSES */
}

/* The RouteAudit of (method, template): from the options' cache, else options.route_audit (which fills it). */
static PyObject *route_audit(PyObject *options, PyObject *method, PyObject *template) {
    PyObject *routes = PyObject_GetAttr(options, str_routes);
    if (routes == NULL) {
        return NULL;
    }
    PyObject *key = PyTuple_Pack(2, method, template);
    PyObject *found = key && PyDict_Check(routes) ? PyDict_GetItemWithError(routes, key) : NULL;
    Py_XDECREF(key);
    Py_DECREF(routes);
    if (found != NULL) {
        return Py_NewRef(found);
    }
    if (PyErr_Occurred()) {
        return NULL;
    }
    PyObject *call_args[] = {options, method, template};
    return PyObject_VectorcallMethod(str_route_audit, call_args, 3 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
}

static PyObject *resource_of(PyObject *route, PyObject *path_params) {
    PyObject *type = PyObject_GetAttr(route, str_resource_type);
    if (type == NULL || type == Py_None) {
        return type;
    }
    PyObject *resource_id = Py_NewRef(Py_None);
    PyObject *param = PyObject_GetAttr(route, str_resource_id_param);
    int has_params = param && param != Py_None ? PyObject_IsTrue(path_params) : 0;
    if (has_params > 0) {
        PyObject *value = PyDict_Check(path_params) ? Py_XNewRef(PyDict_GetItemWithError(path_params, param))
                                                    : PyObject_CallMethod(path_params, "get", "O", param);
        if (value != NULL && value != Py_None) {
            Py_SETREF(resource_id, PyObject_Str(value));
        }
        Py_XDECREF(value);
    }
    Py_XDECREF(param);
    if (PyErr_Occurred() || resource_id == NULL) {
        Py_DECREF(type);
        Py_XDECREF(resource_id);
        return NULL;
    }
    PyObject *resource = PyTuple_Pack(2, type, resource_id);
    Py_DECREF(type);
    Py_DECREF(resource_id);
    return resource;
}

/* {"duration_ms": milliseconds since the start, to the nearest microsecond}, as _http computes it. */
static PyObject *duration_of(PyObject *started_ns) {
    PyObject *now = PyObject_CallNoArgs(perf_counter_ns);
    if (now == NULL) {
        return NULL;
    }
    long long end = PyLong_AsLongLong(now);
    Py_DECREF(now);
    long long start = PyLong_AsLongLong(started_ns);
    if (PyErr_Occurred()) {
        return NULL;
    }
    long long shifted = end - start + 500;
    long long micros = shifted >= 0 ? shifted / 1000 : -((-shifted + 999) / 1000); /* floor division */
    PyObject *milliseconds = PyFloat_FromDouble((double)micros / 1000.0);
    if (milliseconds == NULL) {
        return NULL;
    }
    PyObject *details = PyDict_New();
    if (details == NULL || PyDict_SetItem(details, str_duration_ms, milliseconds) < 0) {
        Py_XDECREF(details);
        details = NULL;
    }
    Py_DECREF(milliseconds);
    return details;
}

/* Whether every field is set (a field can be deleted from Python): 1, else 0 with AttributeError. */
static int has_all_fields(PyObject **fields) {
    for (int index = 0; index < FIELD_COUNT; index++) {
        if (fields[index] == NULL) {
            PyErr_Format(PyExc_AttributeError, "the request state has no %s", field_names[index]);
            return 0;
        }
    }
    return 1;
}

/* `state.status or 500` (borrowed) and its value, for a request that ended without an exception and whose status
 * is a plain int: 1; 0 when the Python code must build the event (an exception's outcome and reason, a status of
 * another type or size). */
static int plain_status(PyObject **fields, PyObject **status, long *code) {
    PyObject *given = fields[F_STATUS];
    if (fields[F_ERROR] != Py_None || (given != Py_None && !PyLong_CheckExact(given))) {
        return 0;
    }
    long value = given == Py_None ? 0 : PyLong_AsLong(given);
    if (value == -1 && PyErr_Occurred()) {
        PyErr_Clear(); /* too large for a long: the Python code takes it */
        return 0;
    }
    *status = value == 0 ? status_500 : given;
    *code = value == 0 ? 500 : value;
    return 1;
}

/* AuditOptions.wants: an audited method, or an access denial on any method (1, 0 or -1). */
static int wanted(PyObject *methods, PyObject *method, long code) {
    return is_denied(code) ? 1 : PySequence_Contains(methods, method);
}

/* The event of a finished request the options audit (after emit_request_event's or the finisher's checks). */
static PyObject *emit_wanted(PyObject *logger, PyObject *options, PyObject **fields, PyObject *status, long code) {
    PyObject *route = route_audit(options, fields[F_METHOD], fields[F_ROUTE_TEMPLATE]);
    PyObject *action = route ? PyObject_GetAttr(route, str_action) : NULL;
    if (action == NULL || action == Py_None) {
        Py_XDECREF(route);
        Py_XDECREF(action);
        return PyErr_Occurred() ? NULL : Py_NewRef(Py_None);
    }
    Py_SETREF(fields[F_EMITTED], Py_NewRef(Py_True));
    PyObject *outcome = code < 400 ? outcome_success : is_denied(code) ? outcome_denied : outcome_failure;
    PyObject *error_type = outcome == outcome_success ? Py_NewRef(Py_None) : PyObject_Str(status);
    PyObject *resource = resource_of(route, fields[F_PATH_PARAMS]);
    PyObject *details = error_type && resource ? duration_of(fields[F_STARTED_NS]) : NULL;
    PyObject *result = NULL;
    if (details != NULL) {
        /* emit's arguments in its order (see logger.emit_positional): changes, severity and timestamp never given. */
        PyObject *call[] = {
            logger, action, fields[F_ACTOR] == Py_None ? anonymous_actor : fields[F_ACTOR], resource, outcome,
            details, Py_None, Py_None, error_type, Py_None, fields[F_TENANT], fields[F_CLIENT_ADDRESS],
            fields[F_USER_AGENT], fields[F_SESSION_ID], fields[F_REQUEST_ID], fields[F_METHOD],
            fields[F_ROUTE_TEMPLATE], fields[F_PATH], status, Py_None,
        };
        result = PyObject_Vectorcall(event_emit, call, sizeof(call) / sizeof(call[0]), NULL);
        Py_XDECREF(result);
        result = result ? Py_NewRef(Py_None) : NULL;
    }
    Py_XDECREF(details);
    Py_XDECREF(resource);
    Py_XDECREF(error_type);
    Py_DECREF(action);
    Py_DECREF(route);
    return result;
}

PyDoc_STRVAR(emit_request_event_doc,
             "emit_request_event(logger, options, state) -> None\n\n"
             "Emit the audit event of a finished request, if the options audit it (_http.python_emit_request_event).");

static PyObject *emit_request_event(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3 || !PyObject_TypeCheck(args[2], &RequestStateType)) {
        PyErr_SetString(PyExc_TypeError, "emit_request_event(logger, options, state: RequestState)");
        return NULL;
    }
    if (event_emit == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "emit_request_event: configure_request_events was not called");
        return NULL;
    }
    PyObject **fields = ((RequestState *)args[2])->fields;
    PyObject *status;
    long code;
    if (!has_all_fields(fields)) {
        return NULL;
    }
    if (!plain_status(fields, &status, &code)) {
        return PyObject_Vectorcall(python_event, args, 3, NULL);
    }
    int emitted = PyObject_IsTrue(fields[F_EMITTED]);
    if (emitted != 0) {
        return emitted < 0 ? NULL : Py_NewRef(Py_None);
    }
    PyObject *methods = PyObject_GetAttr(args[1], str_methods);
    int audited = methods ? wanted(methods, fields[F_METHOD], code) : -1;
    Py_XDECREF(methods);
    if (audited <= 0) {
        return audited < 0 ? NULL : Py_NewRef(Py_None);
    }
    return emit_wanted(args[0], args[1], fields, status, code);
}

/* -- RequestFinisher ----------------------------------------------------------------------------------------- */

/* AuditMiddleware._finish, compiled for the common case: the request's route, then its event. A request whose
 * actor or tenant a resolver may still supply goes to the Python method (`fallback`); a failure is handed to
 * `report` (which marks the state emitted, logs and counts it, and raises in strict mode). */
typedef struct {
    PyObject_HEAD
    PyObject *logger, *options, *methods, *fallback, *report;
    int resolves_late; /* a custom actor resolver or a tenant resolver */
    vectorcallfunc vectorcall;
} RequestFinisher;

static int needs_resolver(RequestFinisher *finisher, PyObject *scope, RequestState *state) {
    if (state->fields[F_ACTOR] != Py_None && state->fields[F_TENANT] != Py_None) {
        return 0;
    }
    if (finisher->resolves_late) {
        return 1;
    }
    if (state->fields[F_ACTOR] != Py_None) {
        return 0;
    }
    return has_user(scope);
}

/* The event of a finished request, or None; sets *slow (and answers NULL, no error) when the Python method must
 * finish it: a resolver has work, or the event is one the Python code builds (see plain_status). */
static PyObject *finish_fast(RequestFinisher *finisher, PyObject *scope, RequestState *state, int *slow) {
    PyObject **fields = state->fields;
    PyObject *status;
    long code;
    if (!has_all_fields(fields)) {
        return NULL;
    }
    int emitted = PyObject_IsTrue(fields[F_EMITTED]);
    if (emitted != 0) {
        return emitted < 0 ? NULL : Py_NewRef(Py_None);
    }
    if (!plain_status(fields, &status, &code)) {
        *slow = 1;
        return NULL;
    }
    int audited = wanted(finisher->methods, fields[F_METHOD], code);
    if (audited <= 0) {
        return audited < 0 ? NULL : Py_NewRef(Py_None);
    }
    int needed = needs_resolver(finisher, scope, state);
    if (needed != 0) {
        *slow = needed > 0;
        return NULL;
    }
    Py_INCREF(status); /* route_of may run Python code (a route's attributes), which could replace the field */
    PyObject *route = route_of(NULL, (PyObject *[]){scope, fields[F_ROOT_PATH]}, 2);
    PyObject *result = NULL;
    if (route != NULL) {
        Py_SETREF(fields[F_ROUTE_TEMPLATE], Py_NewRef(PyTuple_GET_ITEM(route, 0)));
        Py_SETREF(fields[F_PATH_PARAMS], Py_NewRef(PyTuple_GET_ITEM(route, 1)));
        Py_DECREF(route);
        result = emit_wanted(finisher->logger, finisher->options, fields, status, code);
    }
    Py_DECREF(status);
    return result;
}

static PyObject *finisher_call(RequestFinisher *finisher, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    if (PyVectorcall_NARGS(nargsf) != 2 || kwnames != NULL || !PyDict_Check(args[0]) ||
        !PyObject_TypeCheck(args[1], &RequestStateType)) {
        return PyObject_Vectorcall(finisher->fallback, args, PyVectorcall_NARGS(nargsf), kwnames);
    }
    int slow = 0;
    PyObject *result = finish_fast(finisher, args[0], (RequestState *)args[1], &slow);
    if (slow) {
        return PyObject_Vectorcall(finisher->fallback, args, 2, NULL);
    }
    if (result != NULL || !PyErr_ExceptionMatches(PyExc_Exception)) {
        return result; /* BaseExceptions (KeyboardInterrupt, cancellation) propagate as they would in Python */
    }
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    PyErr_NormalizeException(&type, &value, &traceback);
    if (traceback != NULL) {
        PyException_SetTraceback(value, traceback);
    }
    result = PyObject_Vectorcall(finisher->report, (PyObject *[]){value, args[1]}, 2, NULL);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(traceback);
    return result;
}

static PyObject *finisher_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    PyObject *logger, *options, *methods, *fallback, *report;
    int resolves_late;
    if (!PyArg_ParseTuple(args, "OOOOOp:RequestFinisher", &logger, &options, &methods, &fallback, &report,
                          &resolves_late)) {
        return NULL;
    }
    RequestFinisher *finisher = (RequestFinisher *)type->tp_alloc(type, 0);
    if (finisher == NULL) {
        return NULL;
    }
    finisher->logger = Py_NewRef(logger);
    finisher->options = Py_NewRef(options);
    finisher->methods = Py_NewRef(methods);
    finisher->fallback = Py_NewRef(fallback);
    finisher->report = Py_NewRef(report);
    finisher->resolves_late = resolves_late;
    finisher->vectorcall = (vectorcallfunc)finisher_call;
    return (PyObject *)finisher;
}

static int finisher_traverse(RequestFinisher *finisher, visitproc visit, void *arg) {
    Py_VISIT(finisher->logger);
    Py_VISIT(finisher->options);
    Py_VISIT(finisher->methods);
    Py_VISIT(finisher->fallback);
    Py_VISIT(finisher->report);
    return 0;
}

static int finisher_clear(RequestFinisher *finisher) {
    Py_CLEAR(finisher->logger);
    Py_CLEAR(finisher->options);
    Py_CLEAR(finisher->methods);
    Py_CLEAR(finisher->fallback);
    Py_CLEAR(finisher->report);
    return 0;
}

static void finisher_dealloc(RequestFinisher *finisher) {
    PyObject_GC_UnTrack(finisher);
    finisher_clear(finisher);
    Py_TYPE(finisher)->tp_free((PyObject *)finisher);
}

static PyTypeObject RequestFinisherType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "otel_audit.instrumentation._request.RequestFinisher",
    .tp_doc = PyDoc_STR("RequestFinisher(logger, options, methods, fallback, report, resolves_late)(scope, state): "
                        "AuditMiddleware._finish, compiled for requests whose actor and tenant need no resolver."),
    .tp_basicsize = sizeof(RequestFinisher),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_new = finisher_new,
    .tp_vectorcall_offset = offsetof(RequestFinisher, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_traverse = (traverseproc)finisher_traverse,
    .tp_clear = (inquiry)finisher_clear,
    .tp_dealloc = (destructor)finisher_dealloc,
};

/* -- the module ---------------------------------------------------------------------------------------------- */

static PyMethodDef methods[] = {
    {"seed_request_ids", seed_request_ids, METH_VARARGS,
     PyDoc_STR("seed_request_ids(prefix, start): the prefix and counter start of the ids next_request_id makes.")},
    {"next_request_id", next_request_id, METH_NOARGS, PyDoc_STR("next_request_id() -> str: a new unique request id.")},
    {"request_id_from", request_id_from, METH_O,
     PyDoc_STR("request_id_from(value) -> str: the client's id when it is a sane token, else a new one.")},
    {"begin_request", (PyCFunction)(void (*)(void))begin_request, METH_FASTCALL, begin_request_doc},
    {"configure_request_context", configure_request_context, METH_VARARGS,
     PyDoc_STR("configure_request_context(variable, AuditContext): what enter_request_context sets.")},
    {"enter_request_context", enter_request_context, METH_O, enter_request_context_doc},
    {"route_of", (PyCFunction)(void (*)(void))route_of, METH_FASTCALL, route_of_doc},
    {"configure_request_events", configure_request_events, METH_VARARGS,
     PyDoc_STR("configure_request_events(emit_positional, python_emit_request_event, SUCCESS, FAILURE, DENIED, "
               "anonymous): what emit_request_event calls and passes.")},
    {"emit_request_event", (PyCFunction)(void (*)(void))emit_request_event, METH_FASTCALL, emit_request_event_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_definition = {
    PyModuleDef_HEAD_INIT, "_request", "The audit middlewares' per-request bookkeeping, compiled (see _request.c).",
    -1, methods,
};

static PyObject *intern(const char *text) {
    return PyUnicode_InternFromString(text);
}

PyMODINIT_FUNC PyInit__request(void) {
    if ((empty_text = intern("")) == NULL || (str_method = intern("method")) == NULL ||
        (str_path = intern("path")) == NULL || (str_headers = intern("headers")) == NULL ||
        (str_client = intern("client")) == NULL || (str_root_path = intern("root_path")) == NULL ||
        (str_type = intern("type")) == NULL || (str_status = intern("status")) == NULL ||
        (str_response_start = intern("http.response.start")) == NULL || (str_route = intern("route")) == NULL ||
        (str_path_params = intern("path_params")) == NULL || (str_path_format = intern("path_format")) == NULL ||
        (str_methods = intern("methods")) == NULL || (str_routes = intern("_routes")) == NULL ||
        (str_action = intern("action")) == NULL || (str_resource_type = intern("resource_type")) == NULL ||
        (str_resource_id_param = intern("resource_id_param")) == NULL ||
        (str_route_audit = intern("route_audit")) == NULL || (str_duration_ms = intern("duration_ms")) == NULL ||
        (str_user = intern("user")) == NULL || (str_state = intern("state")) == NULL ||
        (status_500 = PyLong_FromLong(500)) == NULL) {
        return NULL;
    }
    PyObject *time_module = PyImport_ImportModule("time");
    if (time_module == NULL) {
        return NULL;
    }
    perf_counter_ns = PyObject_GetAttrString(time_module, "perf_counter_ns");
    Py_DECREF(time_module);
    if (perf_counter_ns == NULL || PyType_Ready(&RequestStateType) < 0 || PyType_Ready(&StatusRecorderType) < 0 ||
        PyType_Ready(&RequestFinisherType) < 0 || PyType_Ready(&RequestStarterType) < 0) {
        return NULL;
    }
    PyObject *module = PyModule_Create(&module_definition);
    if (module == NULL) {
        return NULL;
    }
    if (PyModule_AddObjectRef(module, "RequestState", (PyObject *)&RequestStateType) < 0 ||
        PyModule_AddObjectRef(module, "StatusRecorder", (PyObject *)&StatusRecorderType) < 0 ||
        PyModule_AddObjectRef(module, "RequestFinisher", (PyObject *)&RequestFinisherType) < 0 ||
        PyModule_AddObjectRef(module, "RequestStarter", (PyObject *)&RequestStarterType) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
