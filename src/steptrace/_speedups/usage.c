/* steptrace._speedups.usage: the common path of record_llm_usage, in C.
 *
 * Owns one callable type, Recorder. steptrace._accounting makes one instance
 * at import (when this module is built and STEPTRACE_PURE_PYTHON is unset)
 * and binds it to the public name record_llm_usage. Its reference is the
 * pure-Python steptrace._accounting.record_llm_usage, kept unchanged as
 * _accounting._reference_record_llm_usage: tests/speedups/test_usage*.py
 * run both on identical runs and hold their records equal.
 *
 * A call is handled here only in the common case, decided before anything
 * is mutated:
 *   - the arguments are the documented ones, with exact types in range
 *     (model a str; counts ints in 0..MAX_CALL_TOKENS; cost_usd a float in
 *     0..MAX_CALL_USD; or None, when the price source is asked here, through
 *     the same price_call, once, after every check below, or was asked by the
 *     caller (_priced=True): a price unknown or a failing source leaves the
 *     call unpriced, as in the reference);
 *   - no _hold, and no held check_budget hold pending in this context;
 *   - a frame is active (no default run to create), its usage is not late
 *     (frame.end_ns and run.ended_at are None), no shared budget is in force;
 *   - no OnBudgetThreshold hook is registered.
 * Every other call (an invalid argument, cost_usd=None, a hold to settle,
 * late usage, shared budgets, threshold hooks, an unexpected type anywhere)
 * is passed unchanged to the reference, which therefore decides every rare
 * path and raises every argument error with its own message.
 *
 * In the common case it does what the reference does, in the same order and
 * under the run's lock (a threading.Lock that Python code takes too, so the
 * GIL is no substitute): the step's own counters and last model, then every
 * accounted ledger's counters, the first (innermost) ledger now strictly
 * over a limit giving the error (built by calling the Python _exhausted),
 * then an unpriced call counted as such, the trace tuple appended when tracing
 * is on and the retention check. After the lock: run.trim() when due, then the
 * error is raised (for an unpriced call: the price source's failure, else
 * PricingUnknown under a USD limit).
 *
 * Ledger and frame fields are __slots__ of Python classes: their offsets are
 * read once from the classes' member descriptors (and checked to be plain
 * object slots shared by every frame class), then read and written directly.
 * Totals stay Python ints (PyNumber_Add), so they never overflow.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h> /* T_OBJECT_EX, READONLY: what a __slots__ entry is */
#include <math.h>

/* MAX_CALL_TOKENS (budget.py): counts are ints in 0..2**40 - 1. */
#define MAX_COUNT ((1LL << 40) - 1)
/* MAX_CALL_USD (budget.py). */
#define MAX_COST 1000000.0

/* Interned names, made once at module init. */
static PyObject *s_model, *s_input_tokens, *s_output_tokens, *s_cost_usd, *s_duration_ms,
    *s_cache_tokens, *s_cache_write_tokens, *s__hold, *s__priced, *s_lock, *s_ended_at,
    *s_tracing_enabled, *s_raw_trace, *s_trim_at, *s_trim, *s_acquire, *s_release, *s_state,
    *s_max_tokens, *s_max_usd, *s_empty;
static PyObject *pricing_kwnames; /* ("scope", "scope_name") */
static PyObject *pico_per_usd; /* the int 10**12, for pico_to_usd's true division */
static PyObject *one;          /* the int 1 */
static PyObject *zero;         /* the int 0: duration_ms and cache_tokens' default */

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *dict; /* __dict__, for functools.update_wrapper (__doc__, __wrapped__) */
    PyObject *reference; /* the pure-Python record_llm_usage: every other case */
    PyObject *exhausted; /* _accounting._exhausted(frame, ledger, limit, value) */
    PyObject *active;    /* the ContextVar holding the innermost frame */
    PyObject *pending;   /* the ContextVar holding check_budget's hold */
    PyObject *held;      /* the Hold state object meaning "held" (compared by identity) */
    PyObject *hooks;     /* hooks.registered_hooks, a dict mutated in place */
    PyObject *threshold; /* HookEvent.ON_BUDGET_THRESHOLD */
    PyObject *time;      /* _accounting._time (time.time) */
    PyObject *pricing_unknown; /* errors.PricingUnknown */
    PyObject *price_call;      /* _pricing.price_call, as _accounting calls it */
    PyTypeObject *frame_types[3]; /* Frame, PersonaFrame, StepFrame */
    PyTypeObject *step_type;      /* StepFrame */
    PyTypeObject *ledger_type;    /* Ledger */
    PyTypeObject *hold_type;      /* Hold */
    /* Slot offsets. Frame (any of the three classes): */
    Py_ssize_t f_run, f_step, f_accounted, f_shared, f_end_ns;
    /* StepFrame: */
    Py_ssize_t s_definition, s_in, s_out, s_pico, s_calls, s_unpriced, s_last_model;
    /* Ledger: */
    Py_ssize_t l_in, l_out, l_pico, l_calls, l_unpriced, l_max_tokens, l_max_pico, l_kind,
        l_name;
    /* Hold: */
    Py_ssize_t h_state;
} Recorder;

#define SLOT(obj, offset) (*(PyObject **)((char *)(obj) + (offset)))

/* ---- reading the classes' layout, once ------------------------------------ */

/* The offset of the object slot `name` of `type`, or -1 with an error set when
 * the attribute is not a plain writable __slots__ entry of the type. */
static Py_ssize_t
slot_offset(PyTypeObject *type, const char *name)
{
    PyObject *descr = PyObject_GetAttrString((PyObject *)type, name);
    if (descr == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_AttributeError)) {
            return -1;
        }
        PyErr_Clear(); /* no such class attribute: refused below */
    }
    Py_ssize_t offset = -1;
    if (descr != NULL && Py_IS_TYPE(descr, &PyMemberDescr_Type)) {
        PyMemberDescrObject *member = (PyMemberDescrObject *)descr;
        if (member->d_member->type == T_OBJECT_EX && !(member->d_member->flags & READONLY)
            && PyType_IsSubtype(type, member->d_common.d_type)) {
            offset = member->d_member->offset;
        }
    }
    Py_XDECREF(descr);
    if (offset < 0) {
        PyErr_Format(PyExc_TypeError, "usage accelerator: %s.%s is not a plain slot",
                     type->tp_name, name);
    }
    return offset;
}

/* The same slot's offset in every frame class (a subclass could shadow it). */
static Py_ssize_t
frame_offset(Recorder *self, const char *name)
{
    Py_ssize_t offset = slot_offset(self->frame_types[0], name);
    for (int i = 1; i < 3 && offset >= 0; i++) {
        if (slot_offset(self->frame_types[i], name) != offset) {
            if (!PyErr_Occurred()) {
                PyErr_Format(PyExc_TypeError, "usage accelerator: %s.%s moved",
                             self->frame_types[i]->tp_name, name);
            }
            return -1;
        }
    }
    return offset;
}

/* Whether plain attribute access applies to `type` (no __getattr__,
 * __getattribute__ or __setattr__ of its own), so reading or writing a slot
 * directly is what Python code would do. */
static int
generic_access(PyTypeObject *type)
{
    if (type->tp_getattro == PyObject_GenericGetAttr
        && type->tp_setattro == PyObject_GenericSetAttr) {
        return 1;
    }
    PyErr_Format(PyExc_TypeError, "usage accelerator: %s customises attribute access",
                 type->tp_name);
    return 0;
}

static int
take_type(PyObject *config, const char *key, PyTypeObject **out)
{
    PyObject *value = PyDict_GetItemString(config, key); /* borrowed */
    if (value == NULL || !PyType_Check(value)) {
        PyErr_Format(PyExc_TypeError, "usage accelerator: config[%s] must be a class", key);
        return -1;
    }
    *out = (PyTypeObject *)Py_NewRef(value);
    return generic_access(*out) ? 0 : -1;
}

static int
take(PyObject *config, const char *key, PyObject **out)
{
    PyObject *value = PyDict_GetItemString(config, key); /* borrowed */
    if (value == NULL) {
        PyErr_Format(PyExc_KeyError, "usage accelerator: config lacks %s", key);
        return -1;
    }
    *out = Py_NewRef(value);
    return 0;
}

/* ---- the call ---------------------------------------------------------------- */

/* Whether `value` is an int in 0..MAX_CALL_TOKENS (exactly int, as the
 * reference's combined test asks: bool and subclasses go to the reference). */
static inline int
count_ok(PyObject *value)
{
    if (!PyLong_CheckExact(value)) {
        return 0;
    }
    int overflow;
    long long v = PyLong_AsLongLongAndOverflow(value, &overflow);
    return !overflow && v >= 0 && v <= MAX_COUNT;
}

/* Python's round(x) of a finite float, as an int: half to even, as CPython's
 * float.__round__ computes it (its double_round with ndigits None). */
static PyObject *
round_half_even(double x)
{
    double rounded = round(x);
    if (fabs(x - rounded) == 0.5) {
        rounded = 2.0 * round(x / 2.0);
    }
    return PyLong_FromDouble(rounded);
}

/* slot += delta, on a Python int slot (exact: Python ints never overflow). */
static int
add_to_slot(PyObject *obj, Py_ssize_t offset, PyObject *delta)
{
    PyObject **slot = (PyObject **)((char *)obj + offset);
    PyObject *old = *slot;
    if (old == NULL) {
        PyErr_Format(PyExc_AttributeError, "'%.100s' object has an unset counter slot",
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    /* int + int is int's own addition: call it without the generic dispatch
     * (what `+=` on two ints ends in anyway). */
    PyObject *sum = PyLong_CheckExact(old) && PyLong_CheckExact(delta)
                        ? PyLong_Type.tp_as_number->nb_add(old, delta)
                        : PyNumber_InPlaceAdd(old, delta);
    if (sum == NULL) {
        return -1;
    }
    *slot = sum;
    Py_DECREF(old);
    return 0;
}

static void
set_slot(PyObject *obj, Py_ssize_t offset, PyObject *value)
{
    PyObject **slot = (PyObject **)((char *)obj + offset);
    PyObject *old = *slot;
    *slot = Py_NewRef(value);
    Py_XDECREF(old);
}

/* ledger's usage against its limits: a new reference to the BudgetExhausted
 * the reference would build for it, Py_None when within them, NULL on error.
 * The caller holds the run's lock, as the reference does here. */
static PyObject *
check_limits(Recorder *self, PyObject *frame, PyObject *ledger)
{
    PyObject *limit = SLOT(ledger, self->l_max_tokens);
    if (limit != NULL && limit != Py_None) {
        PyObject *used = PyNumber_Add(SLOT(ledger, self->l_in), SLOT(ledger, self->l_out));
        if (used == NULL) {
            return NULL;
        }
        int over = PyObject_RichCompareBool(used, limit, Py_GT);
        Py_DECREF(used);
        if (over < 0) {
            return NULL;
        }
        if (over) {
            return PyObject_CallFunctionObjArgs(self->exhausted, frame, ledger, s_max_tokens,
                                                limit, NULL);
        }
    }
    PyObject *max_pico = SLOT(ledger, self->l_max_pico);
    if (max_pico != NULL && max_pico != Py_None) {
        int over = PyObject_RichCompareBool(SLOT(ledger, self->l_pico), max_pico, Py_GT);
        if (over < 0) {
            return NULL;
        }
        if (over) {
            PyObject *usd = PyNumber_TrueDivide(max_pico, pico_per_usd); /* pico_to_usd */
            if (usd == NULL) {
                return NULL;
            }
            PyObject *error = PyObject_CallFunctionObjArgs(self->exhausted, frame, ledger,
                                                           s_max_usd, usd, NULL);
            Py_DECREF(usd);
            return error;
        }
    }
    return Py_NewRef(Py_None);
}

/* The mutations the reference makes under the run's lock. Returns 0 or -1
 * with an error set; *exceeded gets the error to raise (or stays NULL) and
 * *trim whether retention is due. */
static int
locked_update(Recorder *self, PyObject *frame, PyObject *run, PyObject *step,
              PyObject *accounted, PyObject *model, PyObject *named, PyObject *in,
              PyObject *out, PyObject *pico, PyObject *cost, int priced, PyObject *duration,
              PyObject *cache, PyObject **exceeded, int *trim)
{
    if (step != Py_None) {
        if (add_to_slot(step, self->s_in, in) < 0 || add_to_slot(step, self->s_out, out) < 0
            || add_to_slot(step, self->s_pico, pico) < 0
            || add_to_slot(step, self->s_calls, one) < 0) {
            return -1;
        }
        if (PyUnicode_GET_LENGTH(named)) { /* the seed keeps the last model named */
            set_slot(step, self->s_last_model, named);
        }
    }
    Py_ssize_t n = PyTuple_GET_SIZE(accounted);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *ledger = PyTuple_GET_ITEM(accounted, i);
        if (add_to_slot(ledger, self->l_in, in) < 0 || add_to_slot(ledger, self->l_out, out) < 0
            || add_to_slot(ledger, self->l_pico, pico) < 0
            || add_to_slot(ledger, self->l_calls, one) < 0) {
            return -1;
        }
        if (*exceeded != NULL) {
            continue;
        }
        /* The innermost scope now strictly over a limit is the one named. */
        PyObject *error = check_limits(self, frame, ledger);
        if (error == NULL) {
            return -1;
        }
        if (error == Py_None) {
            Py_DECREF(error);
        }
        else {
            *exceeded = error;
        }
    }
    if (!priced) { /* a cost unknown is counted, never $0 */
        if (step != Py_None && add_to_slot(step, self->s_unpriced, one) < 0) {
            return -1;
        }
        for (Py_ssize_t i = 0; i < n; i++) {
            if (add_to_slot(PyTuple_GET_ITEM(accounted, i), self->l_unpriced, one) < 0) {
                return -1;
            }
        }
    }
    PyObject *tracing = PyObject_GetAttr(run, s_tracing_enabled);
    if (tracing == NULL) {
        return -1;
    }
    int on = PyObject_IsTrue(tracing);
    Py_DECREF(tracing);
    if (on < 0) {
        return -1;
    }
    if (!on) {
        return 0;
    }
    /* The TraceRecord's fields as a plain tuple (see Run's appending section). */
    PyObject *raw = PyObject_GetAttr(run, s_raw_trace);
    if (raw == NULL) {
        return -1;
    }
    PyObject *at = PyObject_CallNoArgs(self->time);
    if (at == NULL) {
        Py_DECREF(raw);
        return -1;
    }
    PyObject *record = PyTuple_New(9);
    if (record == NULL) {
        Py_DECREF(at);
        Py_DECREF(raw);
        return -1;
    }
    PyObject *fields[9] = {model, in, out, duration, priced ? cost : Py_None, cache, frame, at,
                           Py_False};
    for (int i = 0; i < 9; i++) {
        PyTuple_SET_ITEM(record, i, Py_NewRef(fields[i]));
    }
    Py_DECREF(at);
    int appended;
    if (PyList_CheckExact(raw)) {
        appended = PyList_Append(raw, record);
    }
    else {
        PyObject *result = PyObject_CallMethod(raw, "append", "O", record);
        appended = result == NULL ? -1 : 0;
        Py_XDECREF(result);
    }
    Py_DECREF(record);
    if (appended < 0) {
        Py_DECREF(raw);
        return -1;
    }
    Py_ssize_t length = PyObject_Length(raw);
    Py_DECREF(raw);
    if (length < 0) {
        return -1;
    }
    PyObject *trim_at = PyObject_GetAttr(run, s_trim_at);
    if (trim_at == NULL) {
        return -1;
    }
    int due;
    if (PyLong_CheckExact(trim_at)) { /* no int made for len(raw) */
        int overflow;
        long long bound = PyLong_AsLongLongAndOverflow(trim_at, &overflow);
        due = overflow ? overflow < 0 : length > bound;
    }
    else {
        PyObject *held = PyLong_FromSsize_t(length);
        due = held == NULL ? -1 : PyObject_RichCompareBool(held, trim_at, Py_GT);
        Py_XDECREF(held);
    }
    Py_DECREF(trim_at);
    if (due < 0) {
        return -1;
    }
    *trim = due;
    return 0;
}

/* Release `lock` keeping the error of the block, if any (as a finally does;
 * an error from release itself replaces it). */
static int
release(PyObject *lock)
{
#if PY_VERSION_HEX >= 0x030C0000
    PyObject *pending = PyErr_GetRaisedException();
#else
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    PyObject *pending = type;
#endif
    PyObject *result = PyObject_CallMethodNoArgs(lock, s_release);
    if (result == NULL) {
#if PY_VERSION_HEX >= 0x030C0000
        Py_XDECREF(pending);
#else
        Py_XDECREF(type);
        Py_XDECREF(value);
        Py_XDECREF(traceback);
#endif
        return -1;
    }
    Py_DECREF(result);
#if PY_VERSION_HEX >= 0x030C0000
    if (pending != NULL) {
        PyErr_SetRaisedException(pending);
        return -1;
    }
#else
    if (pending != NULL) {
        PyErr_Restore(type, value, traceback);
        return -1;
    }
#endif
    return 0;
}

/* The error for an unpriced call: PricingUnknown naming the innermost scope
 * with a USD limit (a new reference), Py_None when there is none, or NULL. */
static PyObject *
unpriced_error(Recorder *self, PyObject *accounted, PyObject *model)
{
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(accounted); i++) {
        PyObject *ledger = PyTuple_GET_ITEM(accounted, i);
        PyObject *max_pico = SLOT(ledger, self->l_max_pico);
        if (max_pico == NULL || max_pico == Py_None) {
            continue;
        }
        PyObject *kind = SLOT(ledger, self->l_kind), *name = SLOT(ledger, self->l_name);
        if (kind == NULL || name == NULL) {
            PyErr_SetString(PyExc_AttributeError, "Ledger has an unset kind or name");
            return NULL;
        }
        PyObject *args[3] = {model, kind, name}; /* PricingUnknown(model, scope=, scope_name=) */
        return PyObject_Vectorcall(self->pricing_unknown, args, 1, pricing_kwnames);
    }
    return Py_NewRef(Py_None);
}

/* Whether this context's check_budget hold is still held (1), not (0), or -1. */
static int
hold_pending(Recorder *self)
{
    PyObject *hold;
    if (PyContextVar_Get(self->pending, NULL, &hold) < 0) {
        return -1;
    }
    if (hold == NULL || hold == Py_None) {
        Py_XDECREF(hold);
        return 0;
    }
    /* Held only ever turns into settled or released, so a hold not held now
     * is not held under the lock either: the reference would skip it too. */
    int held = 1;
    if (Py_IS_TYPE(hold, self->hold_type)) {
        held = SLOT(hold, self->h_state) == self->held;
    }
    Py_DECREF(hold);
    return held;
}

/* Whether an OnBudgetThreshold hook is registered (the dict's keys are
 * HookEvent members, so identity answers `in` without Enum.__hash__). */
static int
threshold_hooks(Recorder *self)
{
    PyObject *key, *value;
    Py_ssize_t pos = 0;
    while (PyDict_Next(self->hooks, &pos, &key, &value)) {
        if (key == self->threshold) {
            return 1;
        }
    }
    return 0;
}

static PyObject *
recorder_call(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Recorder *self = (Recorder *)callable;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    PyObject *model = NULL, *in = NULL, *out = NULL, *cost = NULL, *duration = NULL,
             *cache = NULL, *hold = NULL, *cache_write = NULL, *priced_arg = NULL;
    PyObject *frame = NULL, *run = NULL, *step = NULL, *accounted = NULL, *resolved = NULL,
             *pico = NULL, *lock = NULL, *exceeded = NULL, *asked = NULL, *price_error = NULL;
    int trim = 0;

    /* Arguments: the reference's signature. Anything else (too many, unknown,
     * repeated or missing) goes to the reference, which raises its TypeError. */
    if (nargs > 3) {
        goto delegate;
    }
    PyObject **positional[3] = {&model, &in, &out};
    for (Py_ssize_t i = 0; i < nargs; i++) {
        *positional[i] = args[i];
    }
    if (kwnames != NULL) {
        Py_ssize_t nkw = PyTuple_GET_SIZE(kwnames);
        for (Py_ssize_t i = 0; i < nkw; i++) {
            PyObject *key = PyTuple_GET_ITEM(kwnames, i);
            PyObject **target = NULL;
            /* Call sites' names are interned: identity first. */
            PyObject *names[9] = {s_cost_usd, s_duration_ms, s_cache_tokens,
                                  s_cache_write_tokens, s__hold, s__priced,
                                  s_model, s_input_tokens, s_output_tokens};
            PyObject **targets[9] = {&cost, &duration, &cache, &cache_write, &hold,
                                     &priced_arg, &model, &in, &out};
            for (int k = 0; k < 9 && target == NULL; k++) {
                if (key == names[k]) {
                    target = targets[k];
                }
            }
            for (int k = 0; k < 9 && target == NULL; k++) {
                if (PyUnicode_Compare(key, names[k]) == 0) {
                    target = targets[k];
                }
            }
            if (PyErr_Occurred()) {
                return NULL;
            }
            if (target == NULL || *target != NULL) {
                goto delegate;
            }
            *target = args[nargs + i];
        }
    }
    /* The reference's combined test, narrowed: a float cost (an int cost is
     * converted there) or None, no hold to settle. cache_write_tokens matters
     * only when the price source is asked. */
    if (model == NULL || in == NULL || out == NULL || !PyUnicode_CheckExact(model)
        || !count_ok(in) || !count_ok(out) || (duration != NULL && !count_ok(duration))
        || (cache != NULL && !count_ok(cache)) || (hold != NULL && hold != Py_None)) {
        goto delegate;
    }
    double cost_value = 0.0;
    int priced = 1, ask = 0;
    if (cost == NULL || cost == Py_None) {
        if (priced_arg == Py_True) {
            priced = 0; /* asked already, no price known: recorded unpriced, at $0 */
        }
        else if (priced_arg == NULL || priced_arg == Py_False) {
            ask = 1; /* asked below, once the call is known to stay here */
            if (cache_write == NULL) {
                cache_write = zero;
            }
            else if (!count_ok(cache_write)) {
                goto delegate;
            }
        }
        else {
            goto delegate;
        }
    }
    else {
        if (!PyFloat_CheckExact(cost)) {
            goto delegate;
        }
        cost_value = PyFloat_AS_DOUBLE(cost);
        if (!(cost_value >= 0.0 && cost_value <= MAX_COST)) { /* NaN fails too */
            goto delegate;
        }
    }
    if (duration == NULL) {
        duration = zero;
    }
    if (cache == NULL) {
        cache = zero;
    }

    /* Where the call is recorded, and whether that is the common case. */
    int pending = hold_pending(self);
    if (pending != 0) {
        if (pending < 0) {
            return NULL;
        }
        goto delegate;
    }
    if (PyDict_GET_SIZE(self->hooks) && threshold_hooks(self)) {
        goto delegate;
    }
    if (PyContextVar_Get(self->active, NULL, &frame) < 0) {
        return NULL;
    }
    PyTypeObject *frame_type = frame == NULL ? NULL : Py_TYPE(frame);
    if (frame_type != self->frame_types[0] && frame_type != self->frame_types[1]
        && frame_type != self->frame_types[2]) {
        goto delegate; /* no frame yet: the reference opens the default run */
    }
    run = Py_XNewRef(SLOT(frame, self->f_run));
    step = Py_XNewRef(SLOT(frame, self->f_step));
    accounted = Py_XNewRef(SLOT(frame, self->f_accounted));
    PyObject *shared = SLOT(frame, self->f_shared);
    PyObject *end_ns = SLOT(frame, self->f_end_ns);
    if (run == NULL || step == NULL || accounted == NULL || shared == NULL || end_ns != Py_None
        || !PyTuple_CheckExact(shared) || PyTuple_GET_SIZE(shared) != 0
        || !PyTuple_CheckExact(accounted)
        || (step != Py_None && !Py_IS_TYPE(step, self->step_type))) {
        goto delegate; /* late usage, shared budgets, or an unexpected frame */
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(accounted); i++) {
        if (!Py_IS_TYPE(PyTuple_GET_ITEM(accounted, i), self->ledger_type)) {
            goto delegate;
        }
    }
    PyObject *ended_at = PyObject_GetAttr(run, s_ended_at);
    if (ended_at == NULL) {
        goto error;
    }
    int ended = ended_at != Py_None;
    Py_DECREF(ended_at);
    if (ended) {
        goto delegate; /* the run ended: late usage */
    }

    /* An empty model means the step's model (the trace shows it; last_model
     * keeps only a model named by the caller). */
    resolved = Py_NewRef(model);
    if (PyUnicode_GET_LENGTH(model) == 0 && step != Py_None) {
        PyObject *definition = SLOT(step, self->s_definition);
        if (definition == NULL) {
            goto delegate;
        }
        PyObject *declared = PyObject_GetAttr(definition, s_model);
        if (declared == NULL) {
            goto error;
        }
        int truthy = PyObject_IsTrue(declared);
        if (truthy < 0) {
            Py_DECREF(declared);
            goto error;
        }
        Py_SETREF(resolved, truthy ? declared : Py_NewRef(s_empty));
        if (!truthy) {
            Py_DECREF(declared);
        }
    }
    if (ask) { /* price_call(model, input, output, cache, cache_write), as the reference */
        PyObject *question[5] = {resolved, in, out, cache, cache_write};
        asked = PyObject_Vectorcall(self->price_call, question, 5, NULL);
        if (asked == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_Exception)) {
                goto error;
            }
            /* A broken price source: the call is still recorded, unpriced,
             * and the source's error raised after. */
            priced = 0;
#if PY_VERSION_HEX >= 0x030C0000
            price_error = PyErr_GetRaisedException();
#else
            PyObject *type, *traceback;
            PyErr_Fetch(&type, &price_error, &traceback);
            PyErr_NormalizeException(&type, &price_error, &traceback);
            if (traceback != NULL) {
                PyException_SetTraceback(price_error, traceback);
            }
            Py_XDECREF(type);
            Py_XDECREF(traceback);
#endif
        }
        else if (asked == Py_None) {
            priced = 0;
        }
        else if (PyFloat_CheckExact(asked) && PyFloat_AS_DOUBLE(asked) >= 0.0
                 && PyFloat_AS_DOUBLE(asked) <= MAX_COST) {
            cost = asked; /* price_call checks every answer: a float in range */
            cost_value = PyFloat_AS_DOUBLE(asked);
        }
        else {
            PyErr_Format(PyExc_TypeError, "price_call answered %R, not a price", asked);
            goto error;
        }
    }
    pico = priced ? round_half_even(cost_value * 1e12) /* round(cost_usd * PICO_PER_USD) */
                  : Py_NewRef(zero);
    if (pico == NULL) {
        goto error;
    }

    lock = PyObject_GetAttr(run, s_lock);
    if (lock == NULL) {
        goto error;
    }
    PyObject *acquired = PyObject_CallMethodNoArgs(lock, s_acquire);
    if (acquired == NULL) {
        goto error;
    }
    Py_DECREF(acquired);
    int failed = locked_update(self, frame, run, step, accounted, resolved, model, in, out,
                               pico, cost, priced, duration, cache, &exceeded, &trim);
    if (release(lock) < 0 || failed) {
        goto error;
    }
    if (trim) {
        PyObject *trimmed = PyObject_CallMethodNoArgs(run, s_trim);
        if (trimmed == NULL) {
            goto error;
        }
        Py_DECREF(trimmed);
    }
    if (!priced && exceeded == NULL && price_error != NULL) {
        exceeded = price_error; /* a failed price source leaves it unpriced too */
        price_error = NULL;
    }
    else if (!priced && exceeded == NULL) {
        PyObject *error = unpriced_error(self, accounted, resolved);
        if (error == NULL) {
            goto error;
        }
        if (error == Py_None) {
            Py_DECREF(error);
        }
        else {
            exceeded = error;
        }
    }
    if (exceeded != NULL) {
        PyErr_SetObject((PyObject *)Py_TYPE(exceeded), exceeded);
        goto error;
    }
    Py_DECREF(frame);
    Py_DECREF(run);
    Py_DECREF(step);
    Py_DECREF(accounted);
    Py_DECREF(resolved);
    Py_DECREF(pico);
    Py_DECREF(lock);
    Py_XDECREF(asked);
    Py_XDECREF(price_error);
    Py_RETURN_NONE;

error:
    Py_XDECREF(frame);
    Py_XDECREF(run);
    Py_XDECREF(step);
    Py_XDECREF(accounted);
    Py_XDECREF(resolved);
    Py_XDECREF(pico);
    Py_XDECREF(lock);
    Py_XDECREF(exceeded);
    Py_XDECREF(asked);
    Py_XDECREF(price_error);
    return NULL;

delegate:
    /* Nothing has been mutated: the reference handles the call whole. */
    Py_XDECREF(frame);
    Py_XDECREF(run);
    Py_XDECREF(step);
    Py_XDECREF(accounted);
    Py_XDECREF(resolved);
    return PyObject_Vectorcall(self->reference, args, nargsf, kwnames);
}

/* ---- the type ---------------------------------------------------------------- */

static int
recorder_traverse(Recorder *self, visitproc visit, void *arg)
{
    Py_VISIT(self->dict);
    Py_VISIT(self->reference);
    Py_VISIT(self->exhausted);
    Py_VISIT(self->active);
    Py_VISIT(self->pending);
    Py_VISIT(self->held);
    Py_VISIT(self->hooks);
    Py_VISIT(self->threshold);
    Py_VISIT(self->time);
    Py_VISIT(self->pricing_unknown);
    Py_VISIT(self->price_call);
    for (int i = 0; i < 3; i++) {
        Py_VISIT(self->frame_types[i]);
    }
    Py_VISIT(self->step_type);
    Py_VISIT(self->ledger_type);
    Py_VISIT(self->hold_type);
    return 0;
}

static int
recorder_clear(Recorder *self)
{
    Py_CLEAR(self->dict);
    Py_CLEAR(self->reference);
    Py_CLEAR(self->exhausted);
    Py_CLEAR(self->active);
    Py_CLEAR(self->pending);
    Py_CLEAR(self->held);
    Py_CLEAR(self->hooks);
    Py_CLEAR(self->threshold);
    Py_CLEAR(self->time);
    Py_CLEAR(self->pricing_unknown);
    Py_CLEAR(self->price_call);
    for (int i = 0; i < 3; i++) {
        Py_CLEAR(self->frame_types[i]);
    }
    Py_CLEAR(self->step_type);
    Py_CLEAR(self->ledger_type);
    Py_CLEAR(self->hold_type);
    return 0;
}

static void
recorder_dealloc(Recorder *self)
{
    PyObject_GC_UnTrack(self);
    recorder_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject RecorderType;

/* Recorder(reference, config): config names what the common path reads (see
 * _accounting's _accelerated, which builds it). */
static PyObject *
recorder_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *reference, *config;
    if (!PyArg_ParseTuple(args, "OO!:Recorder", &reference, &PyDict_Type, &config)) {
        return NULL;
    }
    if (kwargs != NULL && PyDict_GET_SIZE(kwargs)) {
        PyErr_SetString(PyExc_TypeError, "Recorder takes no keyword arguments");
        return NULL;
    }
    if (!PyCallable_Check(reference)) {
        PyErr_SetString(PyExc_TypeError, "Recorder: reference must be callable");
        return NULL;
    }
    Recorder *self = (Recorder *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->vectorcall = recorder_call;
    self->reference = Py_NewRef(reference);
    if (take(config, "exhausted", &self->exhausted) < 0
        || take(config, "active", &self->active) < 0
        || take(config, "pending", &self->pending) < 0 || take(config, "held", &self->held) < 0
        || take(config, "hooks", &self->hooks) < 0
        || take(config, "threshold", &self->threshold) < 0
        || take(config, "time", &self->time) < 0
        || take(config, "PricingUnknown", &self->pricing_unknown) < 0
        || take(config, "price_call", &self->price_call) < 0
        || take_type(config, "Frame", &self->frame_types[0]) < 0
        || take_type(config, "PersonaFrame", &self->frame_types[1]) < 0
        || take_type(config, "StepFrame", &self->frame_types[2]) < 0
        || take_type(config, "Ledger", &self->ledger_type) < 0
        || take_type(config, "Hold", &self->hold_type) < 0) {
        goto fail;
    }
    self->step_type = (PyTypeObject *)Py_NewRef(self->frame_types[2]);
    if (!PyContextVar_CheckExact(self->active) || !PyContextVar_CheckExact(self->pending)
        || !PyDict_CheckExact(self->hooks)) {
        PyErr_SetString(PyExc_TypeError, "Recorder: active and pending must be ContextVars, "
                                         "hooks a dict");
        goto fail;
    }
    if ((self->f_run = frame_offset(self, "run")) < 0
        || (self->f_step = frame_offset(self, "step")) < 0
        || (self->f_accounted = frame_offset(self, "accounted")) < 0
        || (self->f_shared = frame_offset(self, "shared")) < 0
        || (self->f_end_ns = frame_offset(self, "end_ns")) < 0
        || (self->s_definition = slot_offset(self->step_type, "definition")) < 0
        || (self->s_in = slot_offset(self->step_type, "own_input_tokens")) < 0
        || (self->s_out = slot_offset(self->step_type, "own_output_tokens")) < 0
        || (self->s_pico = slot_offset(self->step_type, "own_cost_pico")) < 0
        || (self->s_calls = slot_offset(self->step_type, "own_llm_calls")) < 0
        || (self->s_unpriced = slot_offset(self->step_type, "own_unpriced_calls")) < 0
        || (self->s_last_model = slot_offset(self->step_type, "last_model")) < 0
        || (self->l_in = slot_offset(self->ledger_type, "input_tokens")) < 0
        || (self->l_out = slot_offset(self->ledger_type, "output_tokens")) < 0
        || (self->l_pico = slot_offset(self->ledger_type, "cost_pico")) < 0
        || (self->l_calls = slot_offset(self->ledger_type, "llm_calls")) < 0
        || (self->l_unpriced = slot_offset(self->ledger_type, "unpriced_calls")) < 0
        || (self->l_kind = slot_offset(self->ledger_type, "kind")) < 0
        || (self->l_name = slot_offset(self->ledger_type, "name")) < 0
        || (self->l_max_tokens = slot_offset(self->ledger_type, "max_tokens")) < 0
        || (self->l_max_pico = slot_offset(self->ledger_type, "max_pico")) < 0
        || (self->h_state = slot_offset(self->hold_type, "state")) < 0) {
        goto fail;
    }
    return (PyObject *)self;

fail:
    Py_DECREF(self);
    return NULL;
}

static PyObject *
recorder_repr(Recorder *self)
{
    return PyUnicode_FromFormat("<compiled function record_llm_usage at %p>", self);
}

static PyObject *
recorder_get_reference(Recorder *self, void *closure)
{
    return Py_NewRef(self->reference);
}

static PyGetSetDef recorder_getset[] = {
    {"__dict__", PyObject_GenericGetDict, PyObject_GenericSetDict, NULL, NULL},
    {"reference", (getter)recorder_get_reference, NULL,
     "The pure-Python function this one mirrors and delegates to.", NULL},
    {NULL},
};

static PyTypeObject RecorderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "steptrace._speedups.usage.Recorder",
    .tp_basicsize = sizeof(Recorder),
    .tp_dealloc = (destructor)recorder_dealloc,
    .tp_vectorcall_offset = offsetof(Recorder, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_repr = (reprfunc)recorder_repr,
    .tp_getattro = PyObject_GenericGetAttr,
    .tp_setattro = PyObject_GenericSetAttr,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "record_llm_usage's common path in C; every other call goes to the "
              "pure-Python reference it wraps. Recorder(reference, config).",
    .tp_traverse = (traverseproc)recorder_traverse,
    .tp_clear = (inquiry)recorder_clear,
    .tp_getset = recorder_getset,
    .tp_dictoffset = offsetof(Recorder, dict),
    .tp_new = recorder_new,
};

/* ---- the module -------------------------------------------------------------- */

static PyObject *
usage_pico(PyObject *module, PyObject *arg)
{
    double value = PyFloat_AsDouble(arg);
    if (value == -1.0 && PyErr_Occurred()) {
        return NULL;
    }
    if (!isfinite(value)) {
        PyErr_SetString(PyExc_ValueError, "pico: a finite float only");
        return NULL;
    }
    return round_half_even(value * 1e12);
}

static PyMethodDef usage_methods[] = {
    {"pico", usage_pico, METH_O,
     "round(cost_usd * 10**12) as the common path computes it (for tests)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef usage_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "steptrace._speedups.usage",
    .m_doc = "The common path of steptrace.record_llm_usage, compiled (see usage.c).",
    .m_size = -1,
    .m_methods = usage_methods,
};

static int
intern(PyObject **out, const char *text)
{
    *out = PyUnicode_InternFromString(text);
    return *out == NULL ? -1 : 0;
}

PyMODINIT_FUNC
PyInit_usage(void)
{
    if (intern(&s_model, "model") < 0 || intern(&s_input_tokens, "input_tokens") < 0
        || intern(&s_output_tokens, "output_tokens") < 0 || intern(&s_cost_usd, "cost_usd") < 0
        || intern(&s_duration_ms, "duration_ms") < 0
        || intern(&s_cache_tokens, "cache_tokens") < 0
        || intern(&s_cache_write_tokens, "cache_write_tokens") < 0
        || intern(&s__hold, "_hold") < 0 || intern(&s__priced, "_priced") < 0
        || intern(&s_lock, "lock") < 0 || intern(&s_ended_at, "ended_at") < 0
        || intern(&s_tracing_enabled, "tracing_enabled") < 0
        || intern(&s_raw_trace, "raw_trace") < 0 || intern(&s_trim_at, "trim_at") < 0
        || intern(&s_trim, "trim") < 0 || intern(&s_acquire, "acquire") < 0
        || intern(&s_release, "release") < 0 || intern(&s_state, "state") < 0
        || intern(&s_max_tokens, "max_tokens") < 0 || intern(&s_max_usd, "max_usd") < 0
        || intern(&s_empty, "") < 0) {
        return NULL;
    }
    if ((pricing_kwnames = Py_BuildValue("(ss)", "scope", "scope_name")) == NULL
        || (pico_per_usd = PyLong_FromLongLong(1000000000000LL)) == NULL
        || (one = PyLong_FromLong(1)) == NULL || (zero = PyLong_FromLong(0)) == NULL) {
        return NULL;
    }
    if (PyType_Ready(&RecorderType) < 0) {
        return NULL;
    }
    PyObject *module = PyModule_Create(&usage_module);
    if (module == NULL) {
        return NULL;
    }
    if (PyModule_AddObjectRef(module, "Recorder", (PyObject *)&RecorderType) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
