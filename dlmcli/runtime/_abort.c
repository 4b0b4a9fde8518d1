/* llama.cpp's abort callback, throttled.

   llama.cpp's CPU backend asks its abort callback after every graph node, on the thread that the
   others then wait for at the node's barrier. A Python callback through ctypes costs about 1 us a
   call (taking the GIL back): 125 nodes made that 3 % of a bundled tiny model's 3-4 ms step. This
   callback reads the context's own abort flag (a server's stop) at every node, and calls Python
   (which runs pending signal handlers: Ctrl-C) only when `period_ns` has passed since it last did.
   Its address is the module's ADDRESS; `data` points at a `hook` laid out as runtime/native.py's
   AbortHook (its LAYOUT, size and field offsets, is checked at import). */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

typedef struct {
    volatile int *flag;           /* the context's abort flag, set from any thread */
    bool (*poll)(void *);         /* the Python check (signals); may be NULL */
    void *poll_data;
    int64_t period_ns;            /* at most one Python call per period */
    int64_t last_ns;              /* when Python was last called (0: never) */
} hook;

static int64_t now_ns(void) {
    struct timespec ts;
#if defined(CLOCK_MONOTONIC)
    clock_gettime(CLOCK_MONOTONIC, &ts);
#else
    timespec_get(&ts, TIME_UTC);
#endif
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static bool throttled_abort(void *data) {
    hook *h = (hook *)data;
#if defined(__GNUC__)
    if (__atomic_load_n(h->flag, __ATOMIC_RELAXED)) return true; /* written by other threads */
#else
    if (*h->flag) return true;
#endif
    const int64_t now = now_ns();
    /* a clock that went back (TIME_UTC) polls at once rather than never */
    if (h->last_ns != 0 && now >= h->last_ns && now - h->last_ns < h->period_ns) return false;
    h->last_ns = now;
    return h->poll != NULL && h->poll(h->poll_data);
}

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_abort", "llama.cpp's abort callback, throttled.", -1,
                                    NULL, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__abort(void) {
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    PyObject *addr = PyLong_FromVoidPtr((void *)(uintptr_t)&throttled_abort);
    if (addr == NULL || PyModule_AddObject(m, "ADDRESS", addr) < 0) { /* (AddObject steals only on success) */
        Py_XDECREF(addr);
        Py_DECREF(m);
        return NULL;
    }
    /* the layout AbortHook must match: size and every field's offset */
    PyObject *layout = Py_BuildValue("(nnnnnn)", (Py_ssize_t)sizeof(hook), (Py_ssize_t)offsetof(hook, flag),
                                     (Py_ssize_t)offsetof(hook, poll), (Py_ssize_t)offsetof(hook, poll_data),
                                     (Py_ssize_t)offsetof(hook, period_ns), (Py_ssize_t)offsetof(hook, last_ns));
    if (layout == NULL || PyModule_AddObject(m, "LAYOUT", layout) < 0) {
        Py_XDECREF(layout);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
