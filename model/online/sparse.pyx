# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""Compiled arithmetic on sparse category distributions (``{raw category id: probability}``).

The shift detector steps every user's three distributions on every event: two blends, a
Jensen-Shannon divergence and the categories that gained most. Over dictionaries of twenty
entries the interpreter spends most of its time on dispatch; these functions do the same
arithmetic in C, operation for operation in the same order as the plain Python they
replaced, so that every result is the same double, bit for bit (``-ffp-contract=off`` keeps
the compiler from fusing a multiply and an add). Keys are matched by their cached hash, then
by equality, as a dictionary would.

Entries are read in each dictionary's order and ties are broken as :func:`sorted` breaks
them (stable), so the output order, and with it every later tie, is deterministic.
:mod:`model.online.distribution` documents the semantics and carries the examples.
"""

from cpython.dict cimport PyDict_GetItem, PyDict_Next, PyDict_Size
from cpython.object cimport Py_EQ, Py_GT, PyObject, PyObject_Hash, PyObject_RichCompareBool
from libc.math cimport log2
from libc.stdlib cimport free, malloc

from math import fsum


cdef struct Entry:
    PyObject *key  # borrowed from a dictionary that outlives the call
    Py_hash_t hash
    double mass


cdef Entry *_entries(dict d, Py_ssize_t extra) except NULL:
    """``d``'s entries, in order, with room for ``extra`` more (free it)."""
    cdef Entry *entries = <Entry *>malloc((PyDict_Size(d) + extra + 1) * sizeof(Entry))
    if entries == NULL:
        raise MemoryError()
    cdef Py_ssize_t pos = 0, n = 0
    cdef PyObject *key
    cdef PyObject *value
    try:
        while PyDict_Next(d, &pos, &key, &value):
            entries[n].key = key
            entries[n].hash = PyObject_Hash(<object>key)
            entries[n].mass = <double>(<object>value)
            n += 1
    except BaseException:
        free(entries)
        raise
    return entries


cdef Py_ssize_t _find(Entry *entries, Py_ssize_t n, PyObject *key, Py_hash_t h) except -2:
    """The index of ``key`` among the first ``n`` entries, or -1."""
    cdef Py_ssize_t i
    for i in range(n):
        if entries[i].hash == h and (entries[i].key == key or PyObject_RichCompareBool(<object>entries[i].key, <object>key, Py_EQ)):
            return i
    return -1


cdef dict _strongest(Entry *entries, Py_ssize_t n, Py_ssize_t m):
    """The first ``n`` entries as a dictionary; only the ``m`` largest, largest first (ties in
    order), when there are more."""
    cdef dict out = {}
    cdef Py_ssize_t i, j, o
    cdef Py_ssize_t *order
    cdef double mass
    if n <= m:
        for i in range(n):
            out[<object>entries[i].key] = entries[i].mass
        return out
    order = <Py_ssize_t *>malloc(n * sizeof(Py_ssize_t))
    if order == NULL:
        raise MemoryError()
    try:
        for i in range(n):  # stable insertion sort, descending: a few dozen entries
            mass = entries[i].mass
            j = i
            while j > 0 and entries[order[j - 1]].mass < mass:
                order[j] = order[j - 1]
                j -= 1
            order[j] = i
        for i in range(m):
            o = order[i]
            out[<object>entries[o].key] = entries[o].mass
        return out
    finally:
        free(order)


def strongest(dict p not None, Py_ssize_t m):
    """``dict(sorted(p.items(), key=itemgetter(1), reverse=True)[:m])``, or a copy of ``p``
    when it has at most ``m`` entries."""
    cdef Entry *entries = _entries(p, 0)
    try:
        return _strongest(entries, PyDict_Size(p), m)
    finally:
        free(entries)


def blend(dict old not None, dict new not None, double weight, Py_ssize_t m):
    """``(1 - weight) * old + weight * new`` (``old``'s categories first, then ``new``'s
    others, in order), cut to its ``m`` strongest categories."""
    cdef double keep = 1.0 - weight
    cdef Py_ssize_t n = PyDict_Size(old), n_old = n, pos = 0, i
    cdef PyObject *key
    cdef PyObject *value
    cdef Py_hash_t h
    cdef Entry *entries = _entries(old, PyDict_Size(new))
    try:
        for i in range(n):
            entries[i].mass = keep * entries[i].mass
        while PyDict_Next(new, &pos, &key, &value):
            h = PyObject_Hash(<object>key)
            i = _find(entries, n_old, key, h)
            if i >= 0:
                entries[i].mass = entries[i].mass + weight * <double>(<object>value)
            else:
                entries[n].key = key
                entries[n].hash = h
                entries[n].mass = 0.0 + weight * <double>(<object>value)
                n += 1
        return _strongest(entries, n, m)
    finally:
        free(entries)


cdef inline double _add_pair(double total, double a, double b) noexcept:
    """``total`` plus ``a log2(a / mean) + b log2(b / mean)``, added term by term."""
    cdef double mean
    if b == 0.0:
        return total + a  # a log2(a / (a / 2)) is a exactly
    if a == 0.0:
        return total + b
    mean = 0.5 * (a + b)
    total = total + a * log2(a / mean)
    return total + b * log2(b / mean)


def jensen_shannon(dict p not None, dict q not None):
    """Jensen-Shannon divergence in bits (0 = same, 1 = disjoint), the rest (``1 - sum``) of
    each counted as one more category."""
    cdef double total = 0.0
    cdef Py_ssize_t n_p = PyDict_Size(p), n_q = PyDict_Size(q), i, j
    cdef Entry *ps = _entries(p, 0)
    cdef Entry *qs
    cdef char *matched
    try:
        qs = _entries(q, 0)
        try:
            matched = <char *>malloc(n_q + 1)
            if matched == NULL:
                raise MemoryError()
            try:
                for j in range(n_q):
                    matched[j] = 0
                total = _add_pair(total, max(0.0, 1.0 - <double>fsum(p.values())), max(0.0, 1.0 - <double>fsum(q.values())))
                for i in range(n_p):
                    j = _find(qs, n_q, ps[i].key, ps[i].hash)
                    if j >= 0:
                        matched[j] = 1
                        total = _add_pair(total, ps[i].mass, qs[j].mass)
                    else:
                        total = _add_pair(total, ps[i].mass, 0.0)
                for j in range(n_q):  # categories of q alone
                    if not matched[j]:
                        total = total + qs[j].mass
            finally:
                free(matched)
        finally:
            free(qs)
    finally:
        free(ps)
    return min(1.0, max(0.0, 0.5 * total))


def gains(dict previous not None, dict distribution not None, Py_ssize_t n):
    """The (at most ``n``) categories of ``distribution`` whose mass rose most over
    ``previous``, with what they gained, those that gained: the first ``n`` of
    ``sorted((gain, category), reverse=True)``, a tie in gain broken by the larger id."""
    cdef Py_ssize_t kept = 0, pos = 0, j
    cdef PyObject *key
    cdef PyObject *value
    cdef PyObject *found
    cdef double gain
    cdef list best_gain = []
    cdef list best_key = []
    while PyDict_Next(distribution, &pos, &key, &value):
        found = PyDict_GetItem(previous, <object>key)
        gain = <double>(<object>value) - (0.0 if found == NULL else <double>(<object>found))
        j = kept
        while j > 0 and (
            <double>best_gain[j - 1] < gain
            or (<double>best_gain[j - 1] == gain and PyObject_RichCompareBool(<object>key, best_key[j - 1], Py_GT))
        ):
            j -= 1
        if j < n:
            best_gain.insert(j, gain)
            best_key.insert(j, <object>key)
            if kept < n:
                kept += 1
            else:
                best_gain.pop()
                best_key.pop()
    return {best_key[j]: best_gain[j] for j in range(kept) if <double>best_gain[j] > 0}
