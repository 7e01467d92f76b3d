// The glue between a compiled graph's kernels and library calls, in C++: a region's
// lean path (check its arguments' layouts, take its memory from the graph's pool, call
// its kernels with the data pointers, lay out its results), a pooled matmul and a
// folded chain of views, each one call from the graph's Python code. Built once per torch and Python version by
// native.py; every type mirrors a Python one there (tensor_pool.TensorPool,
// launcher.lean_function, library_outputs.pooled_call, view_chains.restride), which
// stays the fallback.
//
// What Python does per call - frames, attribute lookups, a data_ptr() call per tensor, a
// ctypes array - runs among a model's matmuls with cold caches, where each step of it
// costs many times what it does alone (benchmarks/regions_in_model.py).

#include <Python.h>

#include <ATen/core/Tensor.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/as_strided.h>
#include <ATen/ops/baddbmm.h>
#include <ATen/ops/bmm.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mm.h>
#include <c10/core/TensorImpl.h>
#include <torch/csrc/DynamicTypes.h>
#include <torch/csrc/autograd/python_variable.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <typeinfo>
#include <utility>
#include <vector>

namespace {

using Shape = std::vector<int64_t>;

// A tensor on base's memory laid out as (sizes, strides, offset): what the pool hands
// out, never base itself (a caller may change a tensor's metadata in place)
at::Tensor alias(const at::Tensor& base, c10::IntArrayRef sizes, c10::IntArrayRef strides,
                 int64_t offset) {
    auto t = at::detail::make_tensor<c10::TensorImpl>(c10::Storage(base.storage()),
                                                      base.key_set(), base.dtype());
    t.unsafeGetTensorImpl()->set_sizes_and_strides(sizes, strides, offset);
    return t;
}

Shape contiguous(const Shape& sizes) {
    Shape strides(sizes.size());
    int64_t s = 1;
    for (size_t d = sizes.size(); d-- > 0;) {
        strides[d] = s;
        s *= std::max<int64_t>(sizes[d], 1);
    }
    return strides;
}

// -- the pool (tensor_pool.TensorPool) ---------------------------------------------------
struct Kept {
    at::Tensor base;
    size_t nbytes;
    // free: only the pool's tensor refers to the storage (no caller's tensor or view),
    // and nobody resized it
    bool is_free() const {
        const c10::Storage& s = base.storage();
        return s.use_count() == 1 && s.nbytes() == nbytes;
    }
};

struct Bucket {
    std::vector<Kept> kept;
    size_t limit = 0;
};

struct Pool {
    static constexpr size_t KEEP = 2;
    std::mutex mu;
    std::map<std::pair<int64_t, int>, Bucket> buckets;   // node-stable: takers point in
};

struct Allocation {
    Bucket* bucket;
    Shape sizes, strides;
    at::ScalarType dtype;
};

struct Taker {
    std::shared_ptr<Pool> pool;
    std::vector<Allocation> wanted;

    void take(std::vector<at::Tensor>& made) const {
        std::lock_guard<std::mutex> hold(pool->mu);   // the free test and hand-over: one step
        for (const Allocation& a : wanted) {
            auto& kept = a.bucket->kept;
            bool found = false;
            for (size_t j = kept.size(); j-- > 0;) {  // latest handed out first: in the caches
                if (kept[j].is_free()) {
                    Kept k = std::move(kept[j]);
                    kept.erase(kept.begin() + j);
                    made.push_back(alias(k.base, a.sizes, a.strides, 0));
                    kept.push_back(std::move(k));
                    found = true;
                    break;
                }
            }
            if (found) continue;
            at::Tensor base = at::empty(a.sizes, at::TensorOptions().dtype(a.dtype));
            if (kept.size() < a.bucket->limit) {
                made.push_back(alias(base, a.sizes, a.strides, 0));
                size_t nbytes = base.storage().nbytes();
                kept.push_back(Kept{std::move(base), nbytes});
            } else {
                made.push_back(std::move(base));
            }
        }
    }
};

// -- Python objects ---------------------------------------------------------------------
struct PoolObject {
    PyObject_HEAD
    std::shared_ptr<Pool>* pool;
};

struct TakerObject {
    PyObject_HEAD
    PyObject* dict;
    vectorcallfunc vectorcall;
    std::shared_ptr<Taker>* taker;
};

PyObject* wrap(at::Tensor t) { return THPVariable_Wrap(std::move(t)); }

template <class F>
PyObject* guarded(F&& f) {             // a C++ exception becomes a Python RuntimeError
    try {
        return f();
    } catch (const std::exception& e) {
        PyErr_SetString(PyExc_RuntimeError, e.what());
        return nullptr;
    }
}

bool read_shape(PyObject* seq, Shape& out) {
    PyObject* fast = PySequence_Fast(seq, "expected a sequence of ints");
    if (!fast) return false;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    out.resize(n);
    for (Py_ssize_t i = 0; i < n; ++i) {
        out[i] = PyLong_AsLongLong(PySequence_Fast_GET_ITEM(fast, i));
        if (out[i] == -1 && PyErr_Occurred()) {
            Py_DECREF(fast);
            return false;
        }
    }
    Py_DECREF(fast);
    return true;
}

bool read_dtype(PyObject* o, at::ScalarType& out) {
    if (!THPDtype_Check(o)) {
        PyErr_SetString(PyExc_TypeError, "expected a torch.dtype");
        return false;
    }
    out = reinterpret_cast<THPDtype*>(o)->scalar_type;
    return true;
}

PyTypeObject TakerType = {PyVarObject_HEAD_INIT(nullptr, 0)};

PyObject* taker_call(PyObject* self, PyObject* const*, size_t nargs, PyObject* kwnames) {
    if (PyVectorcall_NARGS(nargs) != 0 || (kwnames && PyTuple_GET_SIZE(kwnames))) {
        PyErr_SetString(PyExc_TypeError, "take() takes no arguments");
        return nullptr;
    }
    auto& taker = *reinterpret_cast<TakerObject*>(self)->taker;
    return guarded([&]() -> PyObject* {
        std::vector<at::Tensor> made;
        made.reserve(taker->wanted.size());
        taker->take(made);
        PyObject* list = PyList_New(static_cast<Py_ssize_t>(made.size()));
        if (!list) return nullptr;
        for (size_t i = 0; i < made.size(); ++i) {
            PyObject* item = wrap(std::move(made[i]));
            if (!item) {
                Py_DECREF(list);
                return nullptr;
            }
            PyList_SET_ITEM(list, static_cast<Py_ssize_t>(i), item);
        }
        return list;
    });
}

// pool.taker([(shape, dtype), ...]): a take() for one caller's allocations
PyObject* pool_taker(PyObject* self, PyObject* allocations) {
    auto& pool = *reinterpret_cast<PoolObject*>(self)->pool;
    auto taker = std::make_shared<Taker>();
    taker->pool = pool;
    PyObject* fast = PySequence_Fast(allocations, "allocations: expected a sequence");
    if (!fast) return nullptr;
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(fast); ++i) {
        PyObject* item = PySequence_Fast_GET_ITEM(fast, i);
        Allocation a;
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 2) {
            PyErr_SetString(PyExc_TypeError, "allocations: expected (shape, dtype) pairs");
            Py_DECREF(fast);
            return nullptr;
        }
        if (!read_shape(PyTuple_GET_ITEM(item, 0), a.sizes) ||
            !read_dtype(PyTuple_GET_ITEM(item, 1), a.dtype)) {
            Py_DECREF(fast);
            return nullptr;
        }
        a.strides = contiguous(a.sizes);
        int64_t numel = 1;
        for (int64_t s : a.sizes) numel *= s;
        {
            std::lock_guard<std::mutex> hold(pool->mu);
            a.bucket = &pool->buckets[{numel, static_cast<int>(a.dtype)}];
            a.bucket->limit += Pool::KEEP;
        }
        taker->wanted.push_back(std::move(a));
    }
    Py_DECREF(fast);
    auto* obj = reinterpret_cast<TakerObject*>(TakerType.tp_alloc(&TakerType, 0));
    if (!obj) return nullptr;
    obj->vectorcall = taker_call;
    obj->taker = new std::shared_ptr<Taker>(std::move(taker));
    return reinterpret_cast<PyObject*>(obj);
}

PyObject* pool_release(PyObject* self, PyObject*) {
    auto& pool = *reinterpret_cast<PoolObject*>(self)->pool;
    std::lock_guard<std::mutex> hold(pool->mu);
    for (auto& entry : pool->buckets) entry.second.kept.clear();
    Py_RETURN_NONE;
}

PyObject* pool_nbytes(PyObject* self, PyObject*) {
    auto& pool = *reinterpret_cast<PoolObject*>(self)->pool;
    std::lock_guard<std::mutex> hold(pool->mu);
    unsigned long long total = 0;
    for (auto& entry : pool->buckets)
        for (auto& k : entry.second.kept) total += k.nbytes;
    return PyLong_FromUnsignedLongLong(total);
}

// {(element count, dtype): [data pointer of each kept tensor]}: what tests look at
PyObject* pool_addresses(PyObject* self, PyObject*) {
    auto& pool = *reinterpret_cast<PoolObject*>(self)->pool;
    std::lock_guard<std::mutex> hold(pool->mu);
    PyObject* out = PyDict_New();
    if (!out) return nullptr;
    for (auto& [key, bucket] : pool->buckets) {
        PyObject* list = PyList_New(0);
        PyObject* k = Py_BuildValue("(LO)", static_cast<long long>(key.first),
                                    reinterpret_cast<PyObject*>(torch::getTHPDtype(
                                        static_cast<at::ScalarType>(key.second))));
        bool ok = list && k;
        for (auto& kept : bucket.kept) {
            PyObject* p = ok ? PyLong_FromVoidPtr(kept.base.data_ptr()) : nullptr;
            ok = p && PyList_Append(list, p) == 0;
            Py_XDECREF(p);
        }
        ok = ok && PyDict_SetItem(out, k, list) == 0;
        Py_XDECREF(list);
        Py_XDECREF(k);
        if (!ok) {
            Py_DECREF(out);
            return nullptr;
        }
    }
    return out;
}

PyObject* pool_new(PyTypeObject* type, PyObject*, PyObject*) {
    auto* obj = reinterpret_cast<PoolObject*>(type->tp_alloc(type, 0));
    if (obj) obj->pool = new std::shared_ptr<Pool>(std::make_shared<Pool>());
    return reinterpret_cast<PyObject*>(obj);
}

void pool_dealloc(PyObject* self) {
    delete reinterpret_cast<PoolObject*>(self)->pool;
    Py_TYPE(self)->tp_free(self);
}

PyMethodDef pool_methods[] = {
    {"taker", pool_taker, METH_O, "take() for a caller's [(shape, dtype), ...]"},
    {"release", pool_release, METH_NOARGS, "forget the tensors kept so far"},
    {"nbytes", pool_nbytes, METH_NOARGS, "the bytes the pool keeps"},
    {"addresses", pool_addresses, METH_NOARGS, "{(numel, dtype): [kept data pointers]}"},
    {nullptr, nullptr, 0, nullptr}};

PyTypeObject PoolType = {PyVarObject_HEAD_INIT(nullptr, 0)};

// -- a region's lean path (launcher.lean_function) --------------------------------------
struct InputSpec {
    Shape sizes, strides;
    at::ScalarType dtype;
};

struct Kernel {
    void (*function)(void**);
    std::vector<int> slots;           // into [inputs' pointers..., allocations' pointers...]
};

struct Result {
    int input = -1;                   // the argument returned as it is, or
    int allocation = -1;              // the allocation's memory laid out as:
    Shape sizes, strides;
    bool clone = false;               // (a value returned twice: a copy for the second)
};

struct Launch {
    std::vector<InputSpec> inputs;
    std::shared_ptr<Taker> taker;     // null: no allocations
    std::vector<Kernel> kernels;
    std::vector<Result> results;
    size_t max_slots = 0;             // the most pointers one kernel takes
    bool single = false;
};

struct LaunchObject {
    PyObject_HEAD
    PyObject* dict;
    vectorcallfunc vectorcall;
    Launch* launch;
    PyObject* region;                 // runs only while region.hot is hot
    PyObject* hot;
    PyObject* forward;                // the region's own path: another layout, a failure
    PyObject* give_up;                // give_up(exception) when the kernels fail
};

PyObject* HOT = nullptr;              // "hot", interned

// a tensor the glue reads as memory: a plain TensorImpl (no functionalization wrapper,
// whose data pointer is null, no quantized, batched or nested one, whose subclass fields
// an alias would lose), no Python subclass that dispatches (a fake tensor), no wrapper
// without memory of its own (functorch's), no lazy negation
bool viewable(const at::Tensor& t) {
    return t.defined() && typeid(*t.unsafeGetTensorImpl()) == typeid(c10::TensorImpl) &&
           !t.key_set().has_any(c10::python_ks) &&
           t.unsafeGetTensorImpl()->has_storage() && t.layout() == at::kStrided &&
           !t.is_neg() && !t.is_conj();
}

// and in host memory: what the C kernels and the pool's tensors are
bool plain(const at::Tensor& t) { return viewable(t) && t.device().is_cpu(); }

bool matches(const at::Tensor& t, const InputSpec& spec) {
    return plain(t) && t.scalar_type() == spec.dtype && t.sizes().equals(spec.sizes) &&
           t.strides().equals(spec.strides);
}

PyObject* launch_call(PyObject* self, PyObject* const* args, size_t nargsf, PyObject* kwnames) {
    auto* me = reinterpret_cast<LaunchObject*>(self);
    const Launch& L = *me->launch;
    size_t nargs = PyVectorcall_NARGS(nargsf);
    bool ok = kwnames == nullptr && nargs == L.inputs.size();
    if (ok) {
        PyObject* hot = PyObject_GetAttr(me->region, HOT);
        if (!hot) return nullptr;
        ok = hot == me->hot;
        Py_DECREF(hot);
    }
    std::vector<void*> pointers;
    if (ok) {
        pointers.reserve(nargs + (L.taker ? L.taker->wanted.size() : 0));
        try {
            for (size_t i = 0; ok && i < nargs; ++i) {
                ok = THPVariable_Check(args[i]) &&
                     matches(THPVariable_Unpack(args[i]), L.inputs[i]);
                if (ok) pointers.push_back(THPVariable_Unpack(args[i]).data_ptr());
            }
        } catch (const std::exception&) {   // a tensor the checks could not read
            ok = false;
        }
    }
    if (!ok) return PyObject_Vectorcall(me->forward, args, nargsf, kwnames);
    std::vector<at::Tensor> made;
    std::vector<at::Tensor> results;
    std::string failure;
    bool failed = false;
    try {
        if (L.taker) {
            made.reserve(L.taker->wanted.size());
            L.taker->take(made);
            for (const at::Tensor& t : made) pointers.push_back(t.data_ptr());
        }
        std::vector<void*> a(L.max_slots);
        Py_BEGIN_ALLOW_THREADS           // the kernels are plain C: other threads run on
        for (const Kernel& k : L.kernels) {
            for (size_t s = 0; s < k.slots.size(); ++s) a[s] = pointers[k.slots[s]];
            k.function(a.data());
        }
        Py_END_ALLOW_THREADS
        results.reserve(L.results.size());
        for (const Result& r : L.results) {
            if (r.input >= 0) {
                results.emplace_back();   // filled from args below
                continue;
            }
            at::Tensor t = alias(made[r.allocation], r.sizes, r.strides, 0);
            results.push_back(r.clone ? t.clone() : std::move(t));
        }
    } catch (const std::exception& e) {
        failed = true;
        failure = e.what();
    }
    if (failed) {                       // as the Python path: give up, then the region's own
        PyObject* error = PyObject_CallFunction(PyExc_RuntimeError, "s", failure.c_str());
        if (!error) return nullptr;
        PyObject* r = PyObject_CallOneArg(me->give_up, error);
        Py_DECREF(error);
        if (!r) return nullptr;
        Py_DECREF(r);
        return PyObject_Vectorcall(me->forward, args, nargsf, kwnames);
    }
    auto result = [&](size_t j) -> PyObject* {
        const Result& r = L.results[j];
        if (r.input >= 0) {
            Py_INCREF(args[r.input]);
            return args[r.input];
        }
        return wrap(std::move(results[j]));
    };
    if (L.single) return result(0);
    PyObject* tuple = PyTuple_New(static_cast<Py_ssize_t>(L.results.size()));
    if (!tuple) return nullptr;
    for (size_t j = 0; j < L.results.size(); ++j) {
        PyObject* item = result(j);
        if (!item) {
            Py_DECREF(tuple);
            return nullptr;
        }
        PyTuple_SET_ITEM(tuple, static_cast<Py_ssize_t>(j), item);
    }
    return tuple;
}

// Launch(region, hot, forward, give_up, taker, inputs, kernels, results, single)
//   inputs: [(shape, stride, dtype)]; kernels: [(function address, slots)];
//   results: [("arg", k) | ("kernel", allocation, shape, stride, clone)]
PyObject* launch_new(PyTypeObject* type, PyObject* args, PyObject*) {
    PyObject *region, *hot, *forward, *give_up, *taker, *inputs, *kernels, *results;
    int single;
    if (!PyArg_ParseTuple(args, "OOOOOOOOp", &region, &hot, &forward, &give_up, &taker,
                          &inputs, &kernels, &results, &single))
        return nullptr;
    auto launch = std::make_unique<Launch>();
    launch->single = single;
    if (taker != Py_None) {
        if (!PyObject_TypeCheck(taker, &TakerType)) {
            PyErr_SetString(PyExc_TypeError, "taker: expected a Pool.taker() or None");
            return nullptr;
        }
        launch->taker = *reinterpret_cast<TakerObject*>(taker)->taker;
    }
    PyObject* fast = PySequence_Fast(inputs, "inputs: expected a sequence");
    if (!fast) return nullptr;
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(fast); ++i) {
        PyObject* item = PySequence_Fast_GET_ITEM(fast, i);
        InputSpec spec;
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 3 ||
            !read_shape(PyTuple_GET_ITEM(item, 0), spec.sizes) ||
            !read_shape(PyTuple_GET_ITEM(item, 1), spec.strides) ||
            !read_dtype(PyTuple_GET_ITEM(item, 2), spec.dtype)) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "inputs: (shape, stride, dtype)");
            Py_DECREF(fast);
            return nullptr;
        }
        launch->inputs.push_back(std::move(spec));
    }
    Py_DECREF(fast);
    size_t n_slots = launch->inputs.size() + (launch->taker ? launch->taker->wanted.size() : 0);
    fast = PySequence_Fast(kernels, "kernels: expected a sequence");
    if (!fast) return nullptr;
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(fast); ++i) {
        PyObject* item = PySequence_Fast_GET_ITEM(fast, i);
        Kernel k;
        Shape slots;
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 2 ||
            !read_shape(PyTuple_GET_ITEM(item, 1), slots)) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "kernels: (address, slots)");
            Py_DECREF(fast);
            return nullptr;
        }
        k.function = reinterpret_cast<void (*)(void**)>(
            PyLong_AsVoidPtr(PyTuple_GET_ITEM(item, 0)));
        for (int64_t s : slots) {
            if (s < 0 || static_cast<size_t>(s) >= n_slots) {
                PyErr_SetString(PyExc_ValueError, "kernels: a slot out of range");
                Py_DECREF(fast);
                return nullptr;
            }
            k.slots.push_back(static_cast<int>(s));
        }
        if (!k.function || PyErr_Occurred()) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "kernels: a null function");
            Py_DECREF(fast);
            return nullptr;
        }
        launch->max_slots = std::max(launch->max_slots, k.slots.size());
        launch->kernels.push_back(std::move(k));
    }
    Py_DECREF(fast);
    fast = PySequence_Fast(results, "results: expected a sequence");
    if (!fast) return nullptr;
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(fast); ++i) {
        PyObject* item = PySequence_Fast_GET_ITEM(fast, i);
        Result r;
        const char* kind = PyTuple_Check(item) && PyTuple_GET_SIZE(item) >= 2
            ? PyUnicode_AsUTF8(PyTuple_GET_ITEM(item, 0)) : nullptr;
        bool good = kind != nullptr;
        if (good && std::string(kind) == "arg") {
            r.input = static_cast<int>(PyLong_AsLong(PyTuple_GET_ITEM(item, 1)));
            good = r.input >= 0 && static_cast<size_t>(r.input) < launch->inputs.size();
        } else if (good && std::string(kind) == "kernel" && PyTuple_GET_SIZE(item) == 5) {
            r.allocation = static_cast<int>(PyLong_AsLong(PyTuple_GET_ITEM(item, 1)));
            good = launch->taker && r.allocation >= 0 &&
                   static_cast<size_t>(r.allocation) < launch->taker->wanted.size() &&
                   read_shape(PyTuple_GET_ITEM(item, 2), r.sizes) &&
                   read_shape(PyTuple_GET_ITEM(item, 3), r.strides) &&
                   r.sizes.size() == r.strides.size();
            r.clone = PyObject_IsTrue(PyTuple_GET_ITEM(item, 4)) == 1;
        } else {
            good = false;
        }
        if (!good || PyErr_Occurred()) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "results: ('arg', k) or ('kernel', "
                                "allocation, shape, stride, clone)");
            Py_DECREF(fast);
            return nullptr;
        }
        launch->results.push_back(std::move(r));
    }
    Py_DECREF(fast);
    if (launch->results.empty() || (launch->single && launch->results.size() != 1)) {
        PyErr_SetString(PyExc_ValueError, "results: one for a single result, else any");
        return nullptr;
    }
    auto* obj = reinterpret_cast<LaunchObject*>(type->tp_alloc(type, 0));
    if (!obj) return nullptr;
    obj->vectorcall = launch_call;
    obj->launch = launch.release();
    for (auto [field, value] : {std::pair{&obj->region, region}, {&obj->hot, hot},
                                {&obj->forward, forward}, {&obj->give_up, give_up}}) {
        Py_INCREF(value);
        *field = value;
    }
    return reinterpret_cast<PyObject*>(obj);
}

int launch_traverse(PyObject* self, visitproc visit, void* arg) {
    auto* me = reinterpret_cast<LaunchObject*>(self);
    Py_VISIT(me->dict);
    Py_VISIT(me->region);
    Py_VISIT(me->hot);
    Py_VISIT(me->forward);
    Py_VISIT(me->give_up);
    return 0;
}

int launch_clear(PyObject* self) {
    auto* me = reinterpret_cast<LaunchObject*>(self);
    Py_CLEAR(me->dict);
    Py_CLEAR(me->region);
    Py_CLEAR(me->hot);
    Py_CLEAR(me->forward);
    Py_CLEAR(me->give_up);
    return 0;
}

void launch_dealloc(PyObject* self) {
    PyObject_GC_UnTrack(self);
    launch_clear(self);
    delete reinterpret_cast<LaunchObject*>(self)->launch;
    Py_TYPE(self)->tp_free(self);
}

int taker_traverse(PyObject* self, visitproc visit, void* arg) {
    Py_VISIT(reinterpret_cast<TakerObject*>(self)->dict);
    return 0;
}

int taker_clear(PyObject* self) {
    Py_CLEAR(reinterpret_cast<TakerObject*>(self)->dict);
    return 0;
}

void taker_dealloc(PyObject* self) {
    PyObject_GC_UnTrack(self);
    taker_clear(self);
    delete reinterpret_cast<TakerObject*>(self)->taker;
    Py_TYPE(self)->tp_free(self);
}

PyTypeObject LaunchType = {PyVarObject_HEAD_INIT(nullptr, 0)};

// -- a pooled matmul (library_outputs.pooled_call) --------------------------------------
enum class Matmul { mm, bmm, addmm, baddbmm };

struct MatmulObject {
    PyObject_HEAD
    PyObject* dict;
    vectorcallfunc vectorcall;
    Matmul op;
    std::shared_ptr<Taker>* taker;    // one allocation: the result
    PyObject* fallback;               // the Python pooled call: other arguments, autograd
};

// the time inside pooled matmuls while advise's library clock runs (its profile hook
// sees only Python-level calls of builtins): seconds and calls since it started
struct LibraryClock {
    bool on = false;
    double seconds = 0;
    long long calls = 0;
} library_clock;

PyObject* matmul_call(PyObject* self, PyObject* const* args, size_t nargsf, PyObject* kwnames) {
    auto* me = reinterpret_cast<MatmulObject*>(self);
    size_t nargs = PyVectorcall_NARGS(nargsf);
    size_t want = (me->op == Matmul::mm || me->op == Matmul::bmm) ? 2 : 3;
    bool ok = kwnames == nullptr && nargs == want;
    try {
        for (size_t i = 0; ok && i < nargs; ++i)   // anything else: the Python call
            ok = THPVariable_Check(args[i]) && plain(THPVariable_Unpack(args[i]));
    } catch (const std::exception&) {
        ok = false;
    }
    if (!ok) return PyObject_Vectorcall(me->fallback, args, nargsf, kwnames);
    at::Tensor out;
    try {
        std::vector<at::Tensor> made;
        (*me->taker)->take(made);
        out = std::move(made[0]);
    } catch (const std::exception&) {
        return PyObject_Vectorcall(me->fallback, args, nargsf, kwnames);
    }
    const at::Tensor& a = THPVariable_Unpack(args[0]);
    const at::Tensor& b = THPVariable_Unpack(args[1]);
    const at::Tensor& c = nargs > 2 ? THPVariable_Unpack(args[2]) : b;
    auto start = std::chrono::steady_clock::now();
    bool failed = false;
    Py_BEGIN_ALLOW_THREADS               // as torch's own bindings: other threads run on
    try {
        switch (me->op) {             // the aten argument order: (bias,) a, b
            case Matmul::mm: at::mm_out(out, a, b); break;
            case Matmul::bmm: at::bmm_out(out, a, b); break;
            case Matmul::addmm: at::addmm_out(out, a, b, c); break;
            case Matmul::baddbmm: at::baddbmm_out(out, a, b, c); break;
        }
    } catch (const std::exception&) {
        failed = true;
    }
    Py_END_ALLOW_THREADS
    if (failed)                       // e.g. out= under autograd: the call as written
        return PyObject_Vectorcall(me->fallback, args, nargsf, kwnames);
    if (library_clock.on) {
        library_clock.seconds +=
            std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        library_clock.calls += 1;
    }
    return wrap(std::move(out));
}

// library_clock(on) -> (seconds, calls) since the last call; runs from now on if on
PyObject* library_clock_switch(PyObject*, PyObject* on) {
    int flag = PyObject_IsTrue(on);
    if (flag < 0) return nullptr;
    PyObject* read = Py_BuildValue("(dL)", library_clock.seconds, library_clock.calls);
    library_clock = LibraryClock{flag == 1, 0, 0};
    return read;
}

PyMethodDef module_methods[] = {
    {"library_clock", library_clock_switch, METH_O,
     "library_clock(on) -> (seconds, calls) inside pooled matmuls since the last call"},
    {nullptr, nullptr, 0, nullptr}};

// Matmul(kind, taker, fallback): kind "mm" | "bmm" | "addmm" | "baddbmm"
PyObject* matmul_new(PyTypeObject* type, PyObject* args, PyObject*) {
    const char* kind;
    PyObject *taker, *fallback;
    if (!PyArg_ParseTuple(args, "sO!O", &kind, &TakerType, &taker, &fallback)) return nullptr;
    std::string k(kind);
    Matmul op;
    if (k == "mm") op = Matmul::mm;
    else if (k == "bmm") op = Matmul::bmm;
    else if (k == "addmm") op = Matmul::addmm;
    else if (k == "baddbmm") op = Matmul::baddbmm;
    else {
        PyErr_Format(PyExc_ValueError, "kind: expected mm, bmm, addmm or baddbmm, got %s", kind);
        return nullptr;
    }
    auto& t = *reinterpret_cast<TakerObject*>(taker)->taker;
    if (t->wanted.size() != 1) {
        PyErr_SetString(PyExc_ValueError, "taker: expected one allocation (the result)");
        return nullptr;
    }
    auto* obj = reinterpret_cast<MatmulObject*>(type->tp_alloc(type, 0));
    if (!obj) return nullptr;
    obj->vectorcall = matmul_call;
    obj->op = op;
    obj->taker = new std::shared_ptr<Taker>(t);
    Py_INCREF(fallback);
    obj->fallback = fallback;
    return reinterpret_cast<PyObject*>(obj);
}

int matmul_traverse(PyObject* self, visitproc visit, void* arg) {
    Py_VISIT(reinterpret_cast<MatmulObject*>(self)->dict);
    Py_VISIT(reinterpret_cast<MatmulObject*>(self)->fallback);
    return 0;
}

int matmul_clear(PyObject* self) {
    Py_CLEAR(reinterpret_cast<MatmulObject*>(self)->dict);
    Py_CLEAR(reinterpret_cast<MatmulObject*>(self)->fallback);
    return 0;
}

void matmul_dealloc(PyObject* self) {
    PyObject_GC_UnTrack(self);
    matmul_clear(self);
    delete reinterpret_cast<MatmulObject*>(self)->taker;
    Py_TYPE(self)->tp_free(self);
}

PyTypeObject MatmulType = {PyVarObject_HEAD_INIT(nullptr, 0)};

// -- a chain of views folded into one (view_chains.restride, restride_inside) ------------
struct RestrideObject {
    PyObject_HEAD
    PyObject* dict;
    vectorcallfunc vectorcall;
    Shape* sizes;
    Shape* strides;
    Shape* base_strides;
    int64_t offset, base_offset;
    bool inside;                      // only the graph reads it: an alias, not a view
    PyObject* replay;                 // replay(base): the chain of views as written
};

PyObject* restride_call(PyObject* self, PyObject* const* args, size_t nargsf, PyObject* kwnames) {
    auto* me = reinterpret_cast<RestrideObject*>(self);
    if (kwnames != nullptr || PyVectorcall_NARGS(nargsf) != 1 || !THPVariable_Check(args[0]))
        return PyObject_Vectorcall(me->replay, args, nargsf, kwnames);
    try {
        const at::Tensor& base = THPVariable_Unpack(args[0]);
        // the base laid out as the graph said (else the chain means something else)
        if (viewable(base) && base.storage_offset() == me->base_offset &&
            base.strides().equals(*me->base_strides)) {
            return wrap(me->inside ? alias(base, *me->sizes, *me->strides, me->offset)
                                   : at::as_strided(base, *me->sizes, *me->strides, me->offset));
        }
    } catch (const std::exception&) {  // e.g. a size the base does not hold: the chain's error
    }
    return PyObject_Vectorcall(me->replay, args, nargsf, kwnames);
}

// Restride(size, stride, offset, base_stride, base_offset, inside, replay)
PyObject* restride_new(PyTypeObject* type, PyObject* args, PyObject*) {
    PyObject *size, *stride, *base_stride, *replay;
    long long offset, base_offset;
    int inside;
    if (!PyArg_ParseTuple(args, "OOLOLpO", &size, &stride, &offset, &base_stride,
                          &base_offset, &inside, &replay))
        return nullptr;
    Shape sizes, strides, base_strides;
    if (!read_shape(size, sizes) || !read_shape(stride, strides) ||
        !read_shape(base_stride, base_strides))
        return nullptr;
    if (sizes.size() != strides.size() || offset < 0 || base_offset < 0 ||
        !PyCallable_Check(replay)) {
        PyErr_SetString(PyExc_ValueError, "Restride: sizes and strides of one length, "
                        "offsets >= 0 and a callable replay");
        return nullptr;
    }
    auto* obj = reinterpret_cast<RestrideObject*>(type->tp_alloc(type, 0));
    if (!obj) return nullptr;
    obj->vectorcall = restride_call;
    obj->sizes = new Shape(std::move(sizes));
    obj->strides = new Shape(std::move(strides));
    obj->base_strides = new Shape(std::move(base_strides));
    obj->offset = offset;
    obj->base_offset = base_offset;
    obj->inside = inside;
    Py_INCREF(replay);
    obj->replay = replay;
    return reinterpret_cast<PyObject*>(obj);
}

int restride_traverse(PyObject* self, visitproc visit, void* arg) {
    Py_VISIT(reinterpret_cast<RestrideObject*>(self)->dict);
    Py_VISIT(reinterpret_cast<RestrideObject*>(self)->replay);
    return 0;
}

int restride_clear(PyObject* self) {
    Py_CLEAR(reinterpret_cast<RestrideObject*>(self)->dict);
    Py_CLEAR(reinterpret_cast<RestrideObject*>(self)->replay);
    return 0;
}

void restride_dealloc(PyObject* self) {
    PyObject_GC_UnTrack(self);
    restride_clear(self);
    auto* me = reinterpret_cast<RestrideObject*>(self);
    delete me->sizes;
    delete me->strides;
    delete me->base_strides;
    Py_TYPE(self)->tp_free(self);
}

PyTypeObject RestrideType = {PyVarObject_HEAD_INIT(nullptr, 0)};

// a callable type whose instances carry a __dict__ (FX names a call's target by its
// __name__ and __module__) and are called through vectorcall
template <class Object>
bool ready_callable(PyTypeObject& type, const char* name, const char* doc, newfunc make,
                    destructor dealloc, traverseproc traverse, inquiry clear) {
    type.tp_name = name;
    type.tp_doc = doc;
    type.tp_basicsize = sizeof(Object);
    type.tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL;
    type.tp_new = make;
    type.tp_dealloc = dealloc;
    type.tp_traverse = traverse;
    type.tp_clear = clear;
    type.tp_call = PyVectorcall_Call;
    type.tp_vectorcall_offset = offsetof(Object, vectorcall);
    type.tp_dictoffset = offsetof(Object, dict);
    return PyType_Ready(&type) == 0;
}

PyModuleDef module = {PyModuleDef_HEAD_INIT, "powerfusion_torch_launch",
                      "PowerFusion's native glue for torch.compile graphs", -1, module_methods};

}  // namespace

PyMODINIT_FUNC PyInit_powerfusion_torch_launch(void) {
    HOT = PyUnicode_InternFromString("hot");
    PoolType.tp_name = "powerfusion_torch_launch.Pool";
    PoolType.tp_doc = "Tensors kept by size for reuse (tensor_pool.TensorPool)";
    PoolType.tp_basicsize = sizeof(PoolObject);
    PoolType.tp_flags = Py_TPFLAGS_DEFAULT;
    PoolType.tp_new = pool_new;
    PoolType.tp_dealloc = pool_dealloc;
    PoolType.tp_methods = pool_methods;
    if (!HOT || PyType_Ready(&PoolType) < 0 ||
        !ready_callable<TakerObject>(TakerType, "powerfusion_torch_launch.Taker",
                                     "take(): one caller's tensors from its pool", nullptr,
                                     taker_dealloc, taker_traverse, taker_clear) ||
        !ready_callable<LaunchObject>(LaunchType, "powerfusion_torch_launch.Launch",
                                      "a region's lean path", launch_new, launch_dealloc,
                                      launch_traverse, launch_clear) ||
        !ready_callable<MatmulObject>(MatmulType, "powerfusion_torch_launch.Matmul",
                                      "a matmul into pooled memory", matmul_new,
                                      matmul_dealloc, matmul_traverse, matmul_clear) ||
        !ready_callable<RestrideObject>(RestrideType, "powerfusion_torch_launch.Restride",
                                        "a chain of views as one", restride_new,
                                        restride_dealloc, restride_traverse, restride_clear))
        return nullptr;
    PyObject* m = PyModule_Create(&module);
    if (!m) return nullptr;
    for (auto [name, type] : {std::pair{"Pool", &PoolType}, {"Launch", &LaunchType},
                              {"Matmul", &MatmulType}, {"Taker", &TakerType},
                              {"Restride", &RestrideType}}) {
        Py_INCREF(type);
        if (PyModule_AddObject(m, name, reinterpret_cast<PyObject*>(type)) < 0) {
            Py_DECREF(type);
            Py_DECREF(m);
            return nullptr;
        }
    }
    return m;
}
