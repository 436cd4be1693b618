/* steptrace._speedups.step: the plain (sync) @step call, compiled.
 *
 * This module owns one thing: running a call of the function that
 * `steptrace._wrappers._wrap_sync_step` returns (its inner `step_call`), whose
 * Python body stays the reference. It does not replace that function:
 * `accelerate(f)` turns it into a `StepFunction`, a subtype of `function`
 * with the same layout whose vectorcall slot points at `step_vectorcall`
 * below, so the wrapper is still the very function `functools.wraps`
 * decorated (name, doc, signature, `__wrapped__`, `inspect.isfunction`,
 * method binding, pickling by name) and only how a call of it runs changes.
 * The state a call needs (the wrapped `fn`, the step's definition, limits and
 * scope methods) is read from the function's closure cells, so Python and C
 * read the same objects. Each call does what `step_call` does, in the same
 * order: the current frame from the ContextVar (else `active_frame()`), a new
 * `StepFrame` with every slot filled as `_context.step_frame` fills it
 * (written at the slots' member-descriptor offsets, found and checked once
 * in `configure`), the span appended and retention checked, processors and
 * hooks told, the ContextVar set and reset around the call, a failure handed
 * to `scope.fail` inside an emulated `except` block, the end stamped and the
 * step filed. Rare parts call the same Python helpers: `active_frame()` when
 * no run is active, `step_frame()` for a step with a budget or a shared pool
 * (its Ledger), `run.trim()`, `scope.announce`/`announce_end` when processors
 * or hooks are registered, and `scope.fail`. Two smaller things live here
 * because they need the same layout: `span_frame`, the compiled twin of
 * `_context.span_frame` (a user span's frame; `_context.reference_span_frame`
 * is its reference), and the collector's walk of Frame and StepFrame objects
 * by their slot offsets listed once. With STEPTRACE_PURE_PYTHON=1 this module
 * is not loaded and the Python code runs.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <time.h>

#if PY_VERSION_HEX < 0x030C0000
#include "structmember.h" /* T_OBJECT_EX, READONLY before 3.12 */
#define Py_T_OBJECT_EX T_OBJECT_EX
#define Py_READONLY READONLY
#endif

/* -- what configure() hands over, held for the life of the process ---------- */

/* configure_frames(), from _context: the frames' layout. */
static PyTypeObject *frame_type;      /* _context.Frame */
static PyTypeObject *step_frame_type; /* _context.StepFrame */
static PyObject *context_globals;     /* _context's namespace: _span_ids is rebound after fork */
static PyObject *span_frame_fn;       /* _context.span_frame, the reference */
/* configure(), from _wrappers: what the step call reads. */
static PyObject *active_var;          /* _context._active, the ContextVar */
static PyTypeObject *definition_type; /* definitions.StepDefinition */
static PyObject *spans_globals;       /* spans' namespace: processors is rebound on registration */
static PyObject *registered_hooks;    /* hooks.registered_hooks: one dict, mutated in place */
static PyObject *active_frame_fn;     /* _run.active_frame */
static PyObject *step_frame_fn;       /* _context.step_frame, for budgeted or pooled steps */

/* The code object of `step_call`, adopted by the first accelerate() call;
 * every later function must share it, so the closure cells sit where the
 * indices below say. */
static PyObject *step_code;
static vectorcallfunc function_vectorcall; /* CPython's own, for the fallback */
static Py_ssize_t n_freevars, cell_fn, cell_definition, cell_limits, cell_announce, cell_announce_end,
    cell_fail;

/* Interned attribute names and the constant strings step_call assigns. */
static PyObject *str_run, *str_id, *str_spans, *str_trim_at, *str_trim, *str_ended_steps,
    *str_processors, *str_span_ids, *str_unset, *str_ok, *str_completed, *zero;

/* The StepFrame slots step_frame() assigns, by their member descriptors'
 * offsets. RUN, ACCOUNTED and SHARED are Frame's own slots, so they are at
 * the same offsets in any Frame (the parent may be a run's root, a persona,
 * a step or a user span). */
enum {
    SPAN_ID,
    START_NS,
    END_NS,
    METADATA,
    STATUS,
    ERROR,
    PARENT,
    RUN,
    STEP,
    ACCOUNTED,
    SHARED,
    DEFINITION,
    OWN_INPUT_TOKENS,
    OWN_OUTPUT_TOKENS,
    OWN_COST_PICO,
    OWN_LLM_CALLS,
    OWN_UNPRICED_CALLS,
    LAST_MODEL,
    OUTCOME,
    N_SLOTS
};
static const char *slot_names[N_SLOTS] = {
    "span_id",          "start_ns",          "end_ns",        "_metadata",     "status",
    "error",            "parent",            "run",           "step",          "accounted",
    "shared",           "definition",        "own_input_tokens", "own_output_tokens",
    "own_cost_pico",    "own_llm_calls",     "own_unpriced_calls", "last_model", "outcome",
};
static Py_ssize_t slot_offset[N_SLOTS];
static Py_ssize_t definition_shared_offset;

/* The Frame slots span_frame() assigns (a user span's frame). */
enum {
    F_SPAN_ID,
    F_PARENT_ID,
    F_RUN_ID,
    F_NAME,
    F_KIND,
    F_START_NS,
    F_END_NS,
    F_METADATA,
    F_STATUS,
    F_ERROR,
    F_PARENT,
    F_RUN,
    F_STEP,
    F_ACCOUNTED,
    F_SHARED,
    N_FRAME_SLOTS
};
static const char *frame_slot_names[N_FRAME_SLOTS] = {
    "span_id", "parent_id", "run_id", "name",   "kind", "start_ns",  "end_ns", "_metadata",
    "status",  "error",     "parent", "run",    "step", "accounted", "shared",
};
static Py_ssize_t frame_offset[N_FRAME_SLOTS];

#define SLOT(obj, offset) (*(PyObject **)((char *)(obj) + (offset)))

/* Store `value` (a reference given away) in a slot, releasing what was there. */
static inline void
set_slot(PyObject *obj, int slot, PyObject *value)
{
    Py_XSETREF(SLOT(obj, slot_offset[slot]), value);
}

/* time.time_ns(): CPython reads CLOCK_REALTIME with clock_gettime too. */
static PyObject *
time_ns(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0) {
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return PyLong_FromLongLong((long long)ts.tv_sec * 1000000000LL + ts.tv_nsec);
}

/* The offset of a writable object slot of `type` named `name`, or -1 with an
 * error set: the layout this file relies on is checked once, at configure(). */
static Py_ssize_t
member_offset(PyTypeObject *type, const char *name)
{
    PyObject *descr = PyObject_GetAttrString((PyObject *)type, name);
    if (descr == NULL) {
        return -1;
    }
    Py_ssize_t offset = -1;
    if (Py_IS_TYPE(descr, &PyMemberDescr_Type)) {
        PyMemberDef *member = ((PyMemberDescrObject *)descr)->d_member;
        if (member->type == Py_T_OBJECT_EX && !(member->flags & Py_READONLY)) {
            offset = member->offset;
        }
    }
    Py_DECREF(descr);
    if (offset < 0) {
        PyErr_Format(PyExc_TypeError, "steptrace._speedups.step: %s.%s is not a plain slot",
                     type->tp_name, name);
    }
    return offset;
}

/* -- the collector's walk of a StepFrame ---------------------------------------
 *
 * A run keeps every step frame it made, so the cyclic GC walks each one many
 * times over its life (young, then in every full collection): with the GC on
 * that walk is most of what a step call costs beyond its own work. CPython
 * walks a class with __slots__ generically (`subtype_traverse`: each class of
 * the MRO, each member's descriptor record, its kind). This is the same walk
 * with the 25 slot offsets listed once: every non-empty object slot in the
 * order CPython visits them, then the type, so `gc.get_referents` and every
 * collection see exactly what they saw. Installed only when the layout is
 * the plain one it assumes (slots only, no __dict__, no custom traverse). */

#define MAX_TRAVERSED 64
typedef struct {
    Py_ssize_t offsets[MAX_TRAVERSED]; /* every object slot, in CPython's order */
    int n;
} Walk;
static Walk step_frame_walk, frame_walk;

static inline int
walk(const Walk *w, PyObject *self, visitproc visit, void *arg)
{
    for (int i = 0; i < w->n; i++) {
        Py_VISIT(SLOT(self, w->offsets[i]));
    }
    Py_VISIT(Py_TYPE(self)); /* a heap type's instances hold a reference to it */
    return 0;
}

static int
step_frame_traverse(PyObject *self, visitproc visit, void *arg)
{
    return walk(&step_frame_walk, self, visit, arg);
}

/* Frame's, and through CPython's walk of their own slots, PersonaFrame's. */
static int
frame_traverse(PyObject *self, visitproc visit, void *arg)
{
    return walk(&frame_walk, self, visit, arg);
}

/* Give `type` the walk `traverse` over the table `w`, if every class of its
 * MRO below `object` has CPython's generic walk (`generic`) and slots only;
 * otherwise leave CPython's walk in place. */
static void
install_traverse(PyTypeObject *type, traverseproc generic, Walk *w, traverseproc traverse)
{
    if (type->tp_traverse != generic || !(type->tp_flags & Py_TPFLAGS_HEAPTYPE) ||
        type->tp_weaklistoffset != 0) {
        return;
    }
    int n = 0;
    PyTypeObject *base = type;
    for (; base->tp_traverse == generic; base = base->tp_base) {
        if (!(base->tp_flags & Py_TPFLAGS_HEAPTYPE) || base->tp_dictoffset != 0) {
            return;
        }
        PyMemberDef *member = base->tp_members;
        for (Py_ssize_t i = 0; i < Py_SIZE(base); i++, member++) {
            if (member->type == Py_T_OBJECT_EX) {
                if (n == MAX_TRAVERSED) {
                    return;
                }
                w->offsets[n++] = member->offset;
            }
        }
    }
    if (base != &PyBaseObject_Type) { /* a base with a walk of its own: keep CPython's */
        return;
    }
    w->n = n;
    type->tp_traverse = traverse;
}

/* -- configure(), accelerate(), is_accelerated() ---------------------------- */

/* configure_frames(Frame, StepFrame, context_globals, span_frame): called by
 * _context once its frame classes exist. Finds the slots' offsets, and gives
 * StepFrame then Frame their listed walk (StepFrame first: its table is read
 * through Frame's generic walk). */
static PyObject *
configure_frames(PyObject *module, PyObject *args)
{
    (void)module;
    PyObject *frame, *step_frame, *context_ns, *reference;
    if (!PyArg_ParseTuple(args, "O!O!O!O:configure_frames", &PyType_Type, &frame, &PyType_Type,
                          &step_frame, &PyDict_Type, &context_ns, &reference)) {
        return NULL;
    }
    if (!PyType_IsSubtype((PyTypeObject *)step_frame, (PyTypeObject *)frame)) {
        PyErr_SetString(PyExc_TypeError, "configure_frames: StepFrame must subclass Frame");
        return NULL;
    }
    Py_ssize_t offsets[N_SLOTS], frame_offsets[N_FRAME_SLOTS];
    for (int i = 0; i < N_SLOTS; i++) {
        offsets[i] = member_offset((PyTypeObject *)step_frame, slot_names[i]);
        if (offsets[i] < 0) {
            return NULL;
        }
    }
    for (int i = 0; i < N_FRAME_SLOTS; i++) {
        frame_offsets[i] = member_offset((PyTypeObject *)frame, frame_slot_names[i]);
        if (frame_offsets[i] < 0) {
            return NULL;
        }
    }
    /* A parent's run, accounted and shared are read at Frame's offsets. */
    if (frame_offsets[F_RUN] != offsets[RUN] || frame_offsets[F_ACCOUNTED] != offsets[ACCOUNTED] ||
        frame_offsets[F_SHARED] != offsets[SHARED]) {
        PyErr_SetString(PyExc_TypeError, "configure_frames: StepFrame moved Frame's slots");
        return NULL;
    }
    /* The walks are installed once: a reloaded _context's new classes keep
     * CPython's walk, so no class is ever walked with another's table. */
    int first = frame_type == NULL;
    memcpy(slot_offset, offsets, sizeof offsets);
    memcpy(frame_offset, frame_offsets, sizeof frame_offsets);
    Py_XSETREF(frame_type, (PyTypeObject *)Py_NewRef(frame));
    Py_XSETREF(step_frame_type, (PyTypeObject *)Py_NewRef(step_frame));
    Py_XSETREF(context_globals, Py_NewRef(context_ns));
    Py_XSETREF(span_frame_fn, Py_NewRef(reference));
    if (first) {
        traverseproc generic = frame_type->tp_traverse;
        install_traverse(step_frame_type, generic, &step_frame_walk, step_frame_traverse);
        install_traverse(frame_type, generic, &frame_walk, frame_traverse);
    }
    Py_RETURN_NONE;
}

/* configure(active_var, StepDefinition, spans_globals, registered_hooks,
 * active_frame, step_frame): called by _wrappers, which owns the step call. */
static PyObject *
configure(PyObject *module, PyObject *args)
{
    (void)module;
    PyObject *var, *definition, *spans_ns, *hooks, *active, *make_frame;
    if (!PyArg_ParseTuple(args, "OO!O!O!OO:configure", &var, &PyType_Type, &definition,
                          &PyDict_Type, &spans_ns, &PyDict_Type, &hooks, &active, &make_frame)) {
        return NULL;
    }
    if (frame_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "configure: configure_frames() was not called");
        return NULL;
    }
    if (!PyContextVar_CheckExact(var)) {
        PyErr_SetString(PyExc_TypeError, "configure: expected the ContextVar of active frames");
        return NULL;
    }
    Py_ssize_t shared_offset = member_offset((PyTypeObject *)definition, "shared");
    if (shared_offset < 0) {
        return NULL;
    }
    definition_shared_offset = shared_offset;
    Py_XSETREF(active_var, Py_NewRef(var));
    Py_XSETREF(definition_type, (PyTypeObject *)Py_NewRef(definition));
    Py_XSETREF(spans_globals, Py_NewRef(spans_ns));
    Py_XSETREF(registered_hooks, Py_NewRef(hooks));
    Py_XSETREF(active_frame_fn, Py_NewRef(active));
    Py_XSETREF(step_frame_fn, Py_NewRef(make_frame));
    Py_RETURN_NONE;
}

static PyObject *step_vectorcall(PyObject *, PyObject *const *, size_t, PyObject *);

/* What an accelerated step_call is: a subtype of `function` with the same
 * layout and behaviour (every attribute, binding as a method, repr), made
 * only by accelerate() switching a step_call's type. CPython inlines calls of
 * exact functions into the calling frame without looking at their vectorcall
 * slot (3.11 does so unconditionally); a subtype is always called through
 * that slot, which accelerate() points at step_vectorcall. */
static PyObject *
step_function_reduce(PyObject *self, PyObject *unused)
{
    (void)unused;
    /* Pickled by reference, as pickle saves a function: by qualified name. */
    return PyObject_GetAttrString(self, "__qualname__");
}

static PyMethodDef step_function_methods[] = {
    {"__reduce__", step_function_reduce, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject StepFunctionType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "steptrace._speedups.step.StepFunction",
    .tp_doc = "A @step wrapper whose calls run in C (see steptrace._speedups.step).",
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL |
                Py_TPFLAGS_METHOD_DESCRIPTOR | Py_TPFLAGS_DISALLOW_INSTANTIATION |
                Py_TPFLAGS_IMMUTABLETYPE,
    .tp_methods = step_function_methods,
    .tp_call = PyVectorcall_Call,
};

/* Fill in what StepFunction takes from `function`, then ready it. */
static int
ready_step_function_type(void)
{
    PyTypeObject *base = &PyFunction_Type;
    StepFunctionType.tp_base = base;
    StepFunctionType.tp_basicsize = base->tp_basicsize;
    StepFunctionType.tp_itemsize = base->tp_itemsize;
    StepFunctionType.tp_dealloc = base->tp_dealloc;
    StepFunctionType.tp_traverse = base->tp_traverse;
    StepFunctionType.tp_clear = base->tp_clear;
    StepFunctionType.tp_free = base->tp_free;
    StepFunctionType.tp_repr = base->tp_repr;
    StepFunctionType.tp_descr_get = base->tp_descr_get;
    StepFunctionType.tp_dictoffset = base->tp_dictoffset;
    StepFunctionType.tp_weaklistoffset = base->tp_weaklistoffset;
    StepFunctionType.tp_vectorcall_offset = base->tp_vectorcall_offset;
    return PyType_Ready(&StepFunctionType);
}

/* The index of free variable `name` in `code`'s closure, or -1 with an error. */
static Py_ssize_t
free_index(PyObject *freevars, const char *name)
{
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(freevars); i++) {
        if (PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(freevars, i), name) == 0) {
            return i;
        }
    }
    PyErr_Format(PyExc_TypeError, "accelerate: step_call has no free variable %s", name);
    return -1;
}

/* Adopt a step_call's code object: find its closure's cells by name. A
 * reloaded _wrappers brings a new one; functions of the old one then fall
 * back to CPython's call of their Python body (step_vectorcall checks). */
static int
adopt_code(PyObject *code)
{
    PyObject *freevars = PyObject_GetAttrString(code, "co_freevars");
    if (freevars == NULL) {
        return -1;
    }
    if (!PyTuple_Check(freevars)) {
        Py_DECREF(freevars);
        PyErr_SetString(PyExc_TypeError, "accelerate: co_freevars is not a tuple");
        return -1;
    }
    /* Found into locals first: the cells of the code in use stay valid
     * until the new code is known good. */
    static const char *names[6] = {"fn", "definition", "limits", "announce", "announce_end", "fail"};
    Py_ssize_t found[6];
    for (int i = 0; i < 6; i++) {
        found[i] = free_index(freevars, names[i]);
        if (found[i] < 0) {
            Py_DECREF(freevars);
            return -1;
        }
    }
    n_freevars = PyTuple_GET_SIZE(freevars);
    Py_DECREF(freevars);
    cell_fn = found[0];
    cell_definition = found[1];
    cell_limits = found[2];
    cell_announce = found[3];
    cell_announce_end = found[4];
    cell_fail = found[5];
    Py_XSETREF(step_code, Py_NewRef(code));
    return 0;
}

static PyObject *
accelerate(PyObject *module, PyObject *func)
{
    (void)module;
    if (active_var == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "accelerate: configure() was not called");
        return NULL;
    }
    if (!PyFunction_Check(func)) {
        PyErr_SetString(PyExc_TypeError, "accelerate: expected a step_call function");
        return NULL;
    }
    PyFunctionObject *f = (PyFunctionObject *)func;
    if (function_vectorcall == NULL) {
        function_vectorcall = f->vectorcall; /* CPython's own, before any change */
    }
    if (f->func_code != step_code && adopt_code(f->func_code) < 0) {
        return NULL;
    }
    if (f->func_code != step_code || f->func_closure == NULL ||
        PyTuple_GET_SIZE(f->func_closure) != n_freevars) {
        PyErr_SetString(PyExc_TypeError, "accelerate: not a step_call of _wrap_sync_step");
        return NULL;
    }
    /* The function becomes a StepFunction, below: still a function to
     * everything that looks at it, whose calls CPython does not inline. */
    Py_SET_TYPE(func, &StepFunctionType);
#if PY_VERSION_HEX >= 0x030C0000
    PyFunction_SetVectorcall(f, step_vectorcall); /* also drops its version */
#else
    f->vectorcall = step_vectorcall;
#endif
    return Py_NewRef(func);
}

static PyObject *
is_accelerated(PyObject *module, PyObject *func)
{
    (void)module;
    return PyBool_FromLong(Py_IS_TYPE(func, &StepFunctionType) &&
                           ((PyFunctionObject *)func)->vectorcall == step_vectorcall);
}

/* -- exceptions ------------------------------------------------------------- */

/* The raised exception, taken out of the thread state (a new reference). */
static PyObject *
take_exception(void)
{
#if PY_VERSION_HEX >= 0x030C0000
    return PyErr_GetRaisedException();
#else
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL) {
        PyException_SetTraceback(value, tb);
    }
    Py_XDECREF(type);
    Py_XDECREF(tb);
    return value;
#endif
}

/* Raise `exc` as it is, traceback and chain untouched (steals the reference). */
static void
raise_exception(PyObject *exc)
{
#if PY_VERSION_HEX >= 0x030C0000
    PyErr_SetRaisedException(exc);
#else
    PyErr_Restore(Py_NewRef((PyObject *)Py_TYPE(exc)), exc, PyException_GetTraceback(exc));
#endif
}

/* What `raise error from exc` does inside `except ... as exc:`: the cause,
 * and the implicit context of an exception raised while handling `exc`,
 * breaking a cycle in `exc`'s context chain as CPython does. */
static void
raise_from(PyObject *error, PyObject *exc)
{
    if (!PyExceptionInstance_Check(error)) {
        PyErr_SetString(PyExc_TypeError, "exceptions must derive from BaseException");
        return;
    }
    PyException_SetCause(error, Py_NewRef(exc)); /* also sets __suppress_context__ */
    /* Floyd's walk, as in CPython's _PyErr_SetObject: cut `error` out of the
     * chain, without looping forever on a chain that already has a cycle. */
    PyObject *o = exc, *slow = exc;
    int slow_step = 0;
    for (;;) {
        PyObject *context = PyException_GetContext(o);
        if (context == NULL) {
            break;
        }
        Py_DECREF(context); /* kept alive by `o` */
        if (context == error) {
            PyException_SetContext(o, NULL);
            break;
        }
        o = context;
        if (o == slow) {
            break;
        }
        if (slow_step) {
            PyObject *next = PyException_GetContext(slow);
            Py_XDECREF(next);
            slow = next;
        }
        slow_step = !slow_step;
    }
    PyException_SetContext(error, Py_NewRef(exc));
    raise_exception(Py_NewRef(error));
}

/* -- the call ----------------------------------------------------------------- */

/* A Frame slot's value (borrowed), or NULL with AttributeError set. */
static PyObject *
frame_slot(PyObject *frame, int slot)
{
    PyObject *value = SLOT(frame, slot_offset[slot]);
    if (value == NULL) {
        PyErr_Format(PyExc_AttributeError, "'%.100s' object has no attribute '%s'",
                     Py_TYPE(frame)->tp_name, slot_names[slot]);
    }
    return value;
}

/* `next(_span_ids)`, read from _context's namespace now: a forked child rebinds it. */
static PyObject *
next_span_id(void)
{
    PyObject *ids = PyDict_GetItemWithError(context_globals, str_span_ids); /* borrowed */
    if (ids == NULL) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_NameError, "name '_span_ids' is not defined");
        }
        return NULL;
    }
    if (!PyIter_Check(ids)) {
        PyErr_Format(PyExc_TypeError, "'%.200s' object is not an iterator", Py_TYPE(ids)->tp_name);
        return NULL;
    }
    PyObject *span_id = Py_TYPE(ids)->tp_iternext(ids);
    if (span_id == NULL && !PyErr_Occurred()) {
        PyErr_SetNone(PyExc_StopIteration);
    }
    return span_id;
}

/* `_context.step_frame(definition, parent, limits)`; in C for a step without
 * a budget or a shared pool, the common case. */
static PyObject *
new_step_frame(PyObject *definition, PyObject *parent, PyObject *limits)
{
    PyObject *shared = NULL;
    if (limits == Py_None && Py_IS_TYPE(definition, definition_type) &&
        PyObject_TypeCheck(parent, frame_type)) {
        shared = SLOT(definition, definition_shared_offset);
    }
    /* The Python reference makes the Ledger of a budgeted step and the pool
     * entries of a pooled one, and raises its own errors on anything odd. */
    if (shared == NULL || !PyTuple_CheckExact(shared) || PyTuple_GET_SIZE(shared) != 0 ||
        SLOT(parent, slot_offset[RUN]) == NULL || SLOT(parent, slot_offset[ACCOUNTED]) == NULL ||
        SLOT(parent, slot_offset[SHARED]) == NULL) {
        PyObject *args[3] = {definition, parent, limits};
        return PyObject_Vectorcall(step_frame_fn, args, 3, NULL);
    }
    PyObject *frame = step_frame_type->tp_alloc(step_frame_type, 0);
    if (frame == NULL) {
        return NULL;
    }
    PyObject *span_id = next_span_id();
    if (span_id == NULL) {
        goto error;
    }
    set_slot(frame, SPAN_ID, span_id);
    PyObject *start = time_ns();
    if (start == NULL) {
        goto error;
    }
    set_slot(frame, START_NS, start);
    set_slot(frame, END_NS, Py_NewRef(Py_None));
    set_slot(frame, METADATA, Py_NewRef(Py_None));
    set_slot(frame, STATUS, Py_NewRef(str_unset));
    set_slot(frame, ERROR, Py_NewRef(Py_None));
    set_slot(frame, PARENT, Py_NewRef(parent));
    set_slot(frame, RUN, Py_NewRef(SLOT(parent, slot_offset[RUN])));
    set_slot(frame, STEP, Py_NewRef(frame)); /* a cycle, as in Python: the GC's to break */
    set_slot(frame, ACCOUNTED, Py_NewRef(SLOT(parent, slot_offset[ACCOUNTED])));
    set_slot(frame, SHARED, Py_NewRef(SLOT(parent, slot_offset[SHARED])));
    set_slot(frame, DEFINITION, Py_NewRef(definition));
    set_slot(frame, OWN_INPUT_TOKENS, Py_NewRef(zero));
    set_slot(frame, OWN_OUTPUT_TOKENS, Py_NewRef(zero));
    set_slot(frame, OWN_COST_PICO, Py_NewRef(zero));
    set_slot(frame, OWN_LLM_CALLS, Py_NewRef(zero));
    set_slot(frame, OWN_UNPRICED_CALLS, Py_NewRef(zero));
    set_slot(frame, LAST_MODEL, Py_NewRef(Py_None));
    set_slot(frame, OUTCOME, Py_NewRef(Py_None));
    return frame;
error:
    Py_DECREF(frame);
    return NULL;
}

/* `_context.span_frame(name, kind, parent, metadata)`: a user span's frame,
 * filled as the reference fills it; the reference itself for anything but a
 * Frame parent with its slots set (it raises the errors). */
static PyObject *
span_frame(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    PyObject *parent = nargs == 4 ? args[2] : NULL;
    if (parent == NULL || frame_type == NULL || !PyObject_TypeCheck(parent, frame_type) ||
        SLOT(parent, frame_offset[F_SPAN_ID]) == NULL || SLOT(parent, frame_offset[F_RUN]) == NULL ||
        SLOT(parent, frame_offset[F_STEP]) == NULL ||
        SLOT(parent, frame_offset[F_ACCOUNTED]) == NULL ||
        SLOT(parent, frame_offset[F_SHARED]) == NULL) {
        return PyObject_Vectorcall(span_frame_fn, args, nargs, NULL);
    }
    PyObject *name = args[0], *kind = args[1], *metadata = args[3];
    PyObject *run = SLOT(parent, frame_offset[F_RUN]);
    PyObject *frame = frame_type->tp_alloc(frame_type, 0);
    if (frame == NULL) {
        return NULL;
    }
    PyObject *span_id = next_span_id();
    if (span_id == NULL) {
        goto error;
    }
#define SET(slot, value) Py_XSETREF(SLOT(frame, frame_offset[slot]), (value))
    SET(F_SPAN_ID, span_id);
    SET(F_PARENT_ID, Py_NewRef(SLOT(parent, frame_offset[F_SPAN_ID])));
    PyObject *run_id = PyObject_GetAttr(run, str_id);
    if (run_id == NULL) {
        goto error;
    }
    SET(F_RUN_ID, run_id);
    SET(F_NAME, Py_NewRef(name));
    SET(F_KIND, Py_NewRef(kind));
    PyObject *start = time_ns();
    if (start == NULL) {
        goto error;
    }
    SET(F_START_NS, start);
    SET(F_END_NS, Py_NewRef(Py_None));
    int keep = PyObject_IsTrue(metadata); /* `metadata or None` */
    if (keep < 0) {
        goto error;
    }
    SET(F_METADATA, Py_NewRef(keep ? metadata : Py_None));
    SET(F_STATUS, Py_NewRef(str_unset));
    SET(F_ERROR, Py_NewRef(Py_None));
    SET(F_PARENT, Py_NewRef(parent));
    SET(F_RUN, Py_NewRef(run));
    SET(F_STEP, Py_NewRef(SLOT(parent, frame_offset[F_STEP])));
    SET(F_ACCOUNTED, Py_NewRef(SLOT(parent, frame_offset[F_ACCOUNTED])));
    SET(F_SHARED, Py_NewRef(SLOT(parent, frame_offset[F_SHARED])));
#undef SET
    return frame;
error:
    Py_DECREF(frame);
    return NULL;
}

/* `list.append(item)` on a list attribute of the run. */
static int
append_to(PyObject *run, PyObject *name, PyObject *item, Py_ssize_t *length)
{
    PyObject *list = PyObject_GetAttr(run, name);
    if (list == NULL) {
        return -1;
    }
    int rc;
    if (PyList_CheckExact(list)) {
        rc = PyList_Append(list, item);
    }
    else {
        PyObject *done = PyObject_CallMethod(list, "append", "O", item);
        rc = done == NULL ? -1 : 0;
        Py_XDECREF(done);
    }
    if (rc == 0 && length != NULL) {
        *length = PyObject_Length(list);
        rc = *length < 0 ? -1 : 0;
    }
    Py_DECREF(list);
    return rc;
}

/* `len(spans) > run.trim_at` then `run.trim()`: retention (see Run.trim). */
static int
check_retention(PyObject *run, Py_ssize_t length)
{
    PyObject *trim_at = PyObject_GetAttr(run, str_trim_at);
    if (trim_at == NULL) {
        return -1;
    }
    int over;
    int overflow = 0;
    long long limit = PyLong_CheckExact(trim_at) ? PyLong_AsLongLongAndOverflow(trim_at, &overflow)
                                                 : -1;
    if (PyLong_CheckExact(trim_at) && !(limit == -1 && PyErr_Occurred())) {
        over = overflow ? overflow < 0 : (long long)length > limit;
    }
    else {
        PyErr_Clear();
        PyObject *n = PyLong_FromSsize_t(length);
        over = n == NULL ? -1 : PyObject_RichCompareBool(n, trim_at, Py_GT);
        Py_XDECREF(n);
    }
    Py_DECREF(trim_at);
    if (over > 0) {
        PyObject *done = PyObject_CallMethodNoArgs(run, str_trim);
        if (done == NULL) {
            return -1;
        }
        Py_DECREF(done);
    }
    return over < 0 ? -1 : 0;
}

/* `_spans.processors or registered_hooks`, read now: registration rebinds
 * spans.processors and mutates registered_hooks in place. */
static int
observed(void)
{
    PyObject *processors = PyDict_GetItemWithError(spans_globals, str_processors);
    if (processors == NULL) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_AttributeError,
                            "module 'steptrace.spans' has no attribute 'processors'");
        }
        return -1;
    }
    int truth = PyObject_IsTrue(processors);
    return truth != 0 ? truth : PyObject_IsTrue(registered_hooks);
}

/* `*args, **kwargs` of a vectorcall, as step_call receives them. */
static int
pack_call(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames, PyObject **call_args,
          PyObject **call_kwargs)
{
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    *call_args = PyTuple_New(nargs);
    *call_kwargs = PyDict_New();
    if (*call_args == NULL || *call_kwargs == NULL) {
        return -1;
    }
    for (Py_ssize_t i = 0; i < nargs; i++) {
        PyTuple_SET_ITEM(*call_args, i, Py_NewRef(args[i]));
    }
    for (Py_ssize_t i = 0; i < nkw; i++) {
        if (PyDict_SetItem(*call_kwargs, PyTuple_GET_ITEM(kwnames, i), args[nargs + i]) < 0) {
            return -1;
        }
    }
    return 0;
}

/* `args, kwargs = call` for the arguments a PreStep hook rewrote, made ready
 * for `fn(*args, **kwargs)`. */
static int
unpack_call(PyObject *call, PyObject **call_args, PyObject **call_kwargs)
{
    PyObject *pair = PySequence_Tuple(call);
    if (pair == NULL) {
        return -1;
    }
    if (PyTuple_GET_SIZE(pair) != 2) {
        if (PyTuple_GET_SIZE(pair) > 2) {
            PyErr_SetString(PyExc_ValueError, "too many values to unpack (expected 2)");
        }
        else {
            PyErr_Format(PyExc_ValueError, "not enough values to unpack (expected 2, got %zd)",
                         PyTuple_GET_SIZE(pair));
        }
        Py_DECREF(pair);
        return -1;
    }
    PyObject *args = PyTuple_GET_ITEM(pair, 0), *kwargs = PyTuple_GET_ITEM(pair, 1);
    Py_SETREF(*call_args, PyTuple_CheckExact(args) ? Py_NewRef(args) : PySequence_Tuple(args));
    if (PyDict_CheckExact(kwargs)) {
        Py_SETREF(*call_kwargs, Py_NewRef(kwargs));
    }
    else {
        Py_SETREF(*call_kwargs, PyDict_New());
        if (*call_kwargs != NULL && PyDict_Update(*call_kwargs, kwargs) < 0) {
            Py_CLEAR(*call_kwargs);
        }
    }
    Py_DECREF(pair);
    return *call_args == NULL || *call_kwargs == NULL ? -1 : 0;
}

/* The `except BaseException as exc:` arm: `scope.fail` decides, with `exc`
 * as the exception being handled (sys.exception(), and the implicit context
 * of anything raised), exactly as inside the Python handler. Steals `exc`;
 * returns None (the boundary swallowed it) or NULL with an exception set. */
static PyObject *
handle_failure(PyObject *fail, PyObject *frame, PyObject *exc)
{
    _PyErr_StackItem *info = PyThreadState_Get()->exc_info;
    PyObject *saved = info->exc_value; /* what the except block pushes, then pops */
    info->exc_value = Py_NewRef(exc);
    PyObject *args[2] = {frame, exc};
    PyObject *error = PyObject_Vectorcall(fail, args, 2, NULL);
    PyObject *result = NULL;
    if (error == Py_None) {
        result = Py_NewRef(Py_None);
    }
    else if (error == exc) {
        raise_exception(Py_NewRef(exc)); /* bare `raise` */
    }
    else if (error != NULL) {
        raise_from(error, exc);
    }
    info = PyThreadState_Get()->exc_info;
    Py_XSETREF(info->exc_value, saved);
    Py_XDECREF(error);
    Py_DECREF(exc);
    return result;
}

static PyObject *
step_vectorcall(PyObject *func, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    PyFunctionObject *f = (PyFunctionObject *)func;
    if (f->func_code != step_code) { /* someone replaced __code__: run what is there */
        return function_vectorcall(func, args, nargsf, kwnames);
    }
    PyObject *closure = f->func_closure;
    PyObject *fn = PyCell_GET(PyTuple_GET_ITEM(closure, cell_fn));
    PyObject *definition = PyCell_GET(PyTuple_GET_ITEM(closure, cell_definition));
    PyObject *limits = PyCell_GET(PyTuple_GET_ITEM(closure, cell_limits));
    PyObject *announce = PyCell_GET(PyTuple_GET_ITEM(closure, cell_announce));
    PyObject *announce_end = PyCell_GET(PyTuple_GET_ITEM(closure, cell_announce_end));
    PyObject *fail = PyCell_GET(PyTuple_GET_ITEM(closure, cell_fail));
    if (!fn || !definition || !limits || !announce || !announce_end || !fail) {
        return function_vectorcall(func, args, nargsf, kwnames);
    }
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    PyObject *parent = NULL, *frame = NULL, *run = NULL, *token = NULL, *result = NULL;
    PyObject *call_args = NULL, *call_kwargs = NULL, *exc = NULL;
    Py_ssize_t length;

    /* parent = _get_frame() or active_frame() */
    if (PyContextVar_Get(active_var, NULL, &parent) < 0) {
        return NULL;
    }
    int truth = parent == NULL || parent == Py_None ? 0 : PyObject_IsTrue(parent);
    if (truth < 0) {
        goto done;
    }
    if (!truth) {
        Py_SETREF(parent, PyObject_CallNoArgs(active_frame_fn));
        if (parent == NULL) {
            goto done;
        }
    }
    frame = new_step_frame(definition, parent, limits);
    if (frame == NULL) {
        goto done;
    }
    /* run = parent.run; Run.add_span, inlined */
    run = PyObject_TypeCheck(parent, frame_type) ? Py_XNewRef(frame_slot(parent, RUN))
                                                 : PyObject_GetAttr(parent, str_run);
    if (run == NULL || append_to(run, str_spans, frame, &length) < 0 ||
        check_retention(run, length) < 0) {
        goto done;
    }
    int watched = observed();
    if (watched < 0) {
        goto done;
    }
    if (watched) {
        if (pack_call(args, nargs, kwnames, &call_args, &call_kwargs) < 0) {
            goto done;
        }
        PyObject *pair = PyTuple_Pack(2, call_args, call_kwargs);
        if (pair == NULL) {
            goto done;
        }
        PyObject *announce_args[2] = {frame, pair};
        PyObject *call = PyObject_Vectorcall(announce, announce_args, 2, NULL);
        Py_DECREF(pair);
        if (call == NULL) {
            goto done;
        }
        int rewritten = call != Py_None; /* a PreStep hook rewrote the arguments */
        int rc = rewritten ? unpack_call(call, &call_args, &call_kwargs) : 0;
        Py_DECREF(call);
        if (rc < 0) {
            goto done;
        }
    }

    token = PyContextVar_Set(active_var, frame);
    if (token == NULL) {
        goto done;
    }
    result = call_args == NULL ? PyObject_Vectorcall(fn, args, nargsf, kwnames)
                               : PyObject_Call(fn, call_args, call_kwargs);
    if (result == NULL) {
        exc = take_exception();
    }
    /* finally: _reset_frame(token); an error there goes to the handler too,
     * chained to the one in flight as a finally block chains it. */
    if (PyContextVar_Reset(active_var, token) < 0) {
        PyObject *reset_error = take_exception();
        if (exc != NULL) {
            PyException_SetContext(reset_error, exc);
        }
        exc = reset_error;
        Py_CLEAR(result);
    }
    if (exc != NULL) {
        result = handle_failure(fail, frame, exc);
        goto done;
    }

    /* frame.end_ns = time_ns(); status "ok"; outcome "completed" */
    PyObject *end = time_ns();
    if (end == NULL) {
        Py_CLEAR(result);
        goto done;
    }
    if (Py_IS_TYPE(frame, step_frame_type)) {
        set_slot(frame, END_NS, end);
        set_slot(frame, STATUS, Py_NewRef(str_ok));
        set_slot(frame, OUTCOME, Py_NewRef(str_completed));
    }
    else {
        int rc = PyObject_SetAttrString(frame, "end_ns", end);
        Py_DECREF(end);
        if (rc < 0 || PyObject_SetAttrString(frame, "status", str_ok) < 0 ||
            PyObject_SetAttrString(frame, "outcome", str_completed) < 0) {
            Py_CLEAR(result);
            goto done;
        }
    }
    /* Run.step_ended, inlined */
    if (append_to(run, str_ended_steps, frame, NULL) < 0) {
        Py_CLEAR(result);
        goto done;
    }
    watched = observed();
    if (watched < 0) {
        Py_CLEAR(result);
        goto done;
    }
    if (watched) { /* a PostStep hook may rewrite the result */
        PyObject *end_args[2] = {frame, result};
        Py_SETREF(result, PyObject_Vectorcall(announce_end, end_args, 2, NULL));
    }
done:
    Py_XDECREF(token);
    Py_XDECREF(call_args);
    Py_XDECREF(call_kwargs);
    Py_XDECREF(run);
    Py_XDECREF(frame);
    Py_XDECREF(parent);
    return result;
}

/* -- the module --------------------------------------------------------------- */

static PyMethodDef methods[] = {
    {"configure_frames", configure_frames, METH_VARARGS,
     "configure_frames(Frame, StepFrame, context_globals, span_frame): the frames' layout."},
    {"configure", configure, METH_VARARGS,
     "configure(active_var, StepDefinition, spans_globals, registered_hooks, active_frame, "
     "step_frame): hand over what a step call reads."},
    {"span_frame", (PyCFunction)(void (*)(void))span_frame, METH_FASTCALL,
     "span_frame(name, kind, parent, metadata): _context.span_frame, compiled."},
    {"accelerate", accelerate, METH_O,
     "accelerate(step_call): run calls of this _wrap_sync_step closure in C; returns it."},
    {"is_accelerated", is_accelerated, METH_O,
     "is_accelerated(f): whether calls of f run in C."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "steptrace._speedups.step",
    .m_doc = "The sync @step call in C; steptrace._wrappers._wrap_sync_step is the reference.",
    .m_size = -1,
    .m_methods = methods,
};

static int
intern(PyObject **slot, const char *text)
{
    *slot = PyUnicode_InternFromString(text);
    return *slot == NULL ? -1 : 0;
}

PyMODINIT_FUNC
PyInit_step(void)
{
    if (intern(&str_run, "run") < 0 || intern(&str_id, "id") < 0 || intern(&str_spans, "spans") < 0 ||
        intern(&str_trim_at, "trim_at") < 0 || intern(&str_trim, "trim") < 0 ||
        intern(&str_ended_steps, "ended_steps") < 0 ||
        intern(&str_processors, "processors") < 0 || intern(&str_span_ids, "_span_ids") < 0 ||
        intern(&str_unset, "unset") < 0 || intern(&str_ok, "ok") < 0 ||
        intern(&str_completed, "completed") < 0) {
        return NULL;
    }
    zero = PyLong_FromLong(0);
    if (zero == NULL || ready_step_function_type() < 0) {
        return NULL;
    }
    PyObject *module = PyModule_Create(&module_def);
    if (module != NULL &&
        PyModule_AddObject(module, "StepFunction", Py_NewRef(&StepFunctionType)) < 0) {
        Py_DECREF(&StepFunctionType);
        Py_CLEAR(module);
    }
    return module;
}
