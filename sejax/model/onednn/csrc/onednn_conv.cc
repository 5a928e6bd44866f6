// oneDNN-backed 2D convolution for JAX on CPU, exposed as XLA FFI handlers.
//
// Convolution: NHWC input [N, H, W, Cin] (f32), HWIO kernel [KH, KW, Cin, Cout]
// (f32), stride 1, no dilation, XLA "SAME" padding (lo = (K-1)/2,
// hi = K-1-lo, so even kernel sizes work too), optional bias [Cout].
//
// Exported handlers (register with jax.ffi.register_ffi_target, api v1):
//   OnednnConv2dForward         x, w [, b]  -> y            attr: layout
//   OnednnConv2dBackwardData    dy, w       -> dx           attr: layout
//   OnednnConv2dBackwardWeights x, dy       -> dw [, db]    attr: layout
//
// `layout` selects the memory formats handed to oneDNN:
//   0 (plain)       activations NHWC and weights HWIO used as-is, no reorders;
//   1 (any_weights) activations NHWC as-is, weights in the format the
//                   primitive prefers (reordered from/to HWIO on every call);
//   2 (any)         every tensor in the primitive's preferred format, with
//                   reorders from/to the plain XLA buffers on every call;
//   3 (auto)        1, except backward-weights on CPUs without AVX-512 when
//                   both channel counts are multiples of 8, which takes 2:
//                   there oneDNN picks its jit:avx2 backward-weights kernel,
//                   which runs 1.3-1.8x faster on its blocked activation
//                   format than on NHWC, reorders included, with bitwise the
//                   same result (Zen 3, benchmarks/RESULTS.md). AVX-512 CPUs
//                   get brgemm kernels that take NHWC as it is.
//
// Threading: the supported wheel (onednn-cpu-gomp) uses GNU OpenMP. oneDNN
// fixes the thread count of a primitive when it is *created* (it reads
// omp_get_max_threads() of the creating thread), so the thread count is part
// of the cache key and omp_set_num_threads() is called before creation and
// execution. By default the count equals the size of XLA's intra-op thread
// pool (ffi::ThreadPool::num_threads()); OnednnConvSetNumThreads overrides it.
// Since XLA can run independent thunks (e.g. the two backward convolutions,
// or two simulated devices) concurrently, and each calling thread gets its
// own OpenMP team, executions are serialized by a global mutex by default
// (OnednnConvSetSerialize(0) disables this) to avoid oversubscription.
//
// Thread safety: primitives are cached per shape in a mutex-protected map and
// may be executed from any XLA thread. The scratchpad is user-managed
// (scratchpad_mode::user) and lives in a per-thread workspace together with
// reorder temporaries, because oneDNN's library-managed scratchpad is shared
// by all primitives unless oneDNN was built with DNNL_ENABLE_CONCURRENT_EXEC,
// in which case primitives must not migrate between threads.

#include <omp.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"
#include "cpu_runtime.h"

namespace ffi = xla::ffi;

#define ONEDNN_CONV_EXPORT extern "C" __attribute__((visibility("default")))

namespace onednn_conv {
namespace {

using dnnl::memory;
using Tag = memory::format_tag;
using F32Buffer = ffi::Buffer<ffi::F32, 4>;

constexpr size_t kAlign = 64;

enum class Op : int { kForward = 0, kBackwardData = 1, kBackwardWeights = 2 };
enum class Layout : int { kPlain = 0, kAnyWeights = 1, kAny = 2, kAuto = 3 };

// Whether oneDNN dispatches AVX-512 kernels here (it honours ONEDNN_MAX_CPU_ISA).
bool HasAvx512Core() {
  const auto isa = static_cast<unsigned>(dnnl::get_effective_cpu_isa());
  const auto avx512 = static_cast<unsigned>(dnnl::cpu_isa::avx512_core);
  return (isa & avx512) == avx512;
}

// ---------------------------------------------------------------------------
// Global configuration and shared oneDNN objects.
// ---------------------------------------------------------------------------

std::atomic<int> g_num_threads{0};  // 0: match XLA's intra-op pool size.
std::atomic<int> g_last_num_threads{0};  // Diagnostics: count used last.
std::atomic<bool> g_serialize{true};
std::mutex g_exec_mutex;

const dnnl::engine& Engine() {
  static const dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

// Streams are cheap but not meant to be shared between threads.
dnnl::stream& ThreadStream() {
  thread_local dnnl::stream stream(Engine());
  return stream;
}

// Per-thread, grow-only, 64-byte aligned workspace for the scratchpad and
// reorder temporaries. One handler runs at a time on a given thread.
char* ThreadWorkspace(size_t bytes) {
  struct Workspace {
    std::unique_ptr<char, decltype(&std::free)> data{nullptr, &std::free};
    size_t size = 0;
  };
  thread_local Workspace ws;
  if (bytes > ws.size) {
    size_t rounded = (bytes + kAlign - 1) / kAlign * kAlign;
    char* p = static_cast<char*>(std::aligned_alloc(kAlign, rounded));
    if (p == nullptr) throw std::bad_alloc();
    ws.data.reset(p);
    ws.size = rounded;
  }
  return ws.data.get();
}

int ResolveNumThreads(ffi::ThreadPool& pool) {
  int n = g_num_threads.load();
  if (n <= 0) n = static_cast<int>(pool.num_threads());
  if (n <= 0) n = omp_get_num_procs();
  return n;
}

// ---------------------------------------------------------------------------
// Problem description and cache key.
// ---------------------------------------------------------------------------

struct ConvKey {
  int64_t n, h, w, cin, cout, kh, kw;
  int op;
  int layout;
  int has_bias;
  int num_threads;

  bool operator==(const ConvKey& o) const {
    return std::memcmp(this, &o, sizeof(ConvKey)) == 0;
  }
};
static_assert(sizeof(ConvKey) == 7 * 8 + 4 * 4, "ConvKey must have no padding");

struct ConvKeyHash {
  size_t operator()(const ConvKey& k) const {
    // FNV-1a over the (padding-free) bytes of the key.
    const auto* p = reinterpret_cast<const unsigned char*>(&k);
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < sizeof(ConvKey); ++i) {
      h = (h ^ p[i]) * 1099511628211ull;
    }
    return static_cast<size_t>(h);
  }
};

// One tensor argument of a primitive: the plain layout of the XLA buffer and
// the layout the primitive uses; a reorder runs on every call if they differ.
struct Slot {
  int arg = 0;                  // DNNL_ARG_*
  bool is_output = false;
  memory::desc user_md;         // plain NHWC / HWIO / x layout
  memory::desc prim_md;         // layout chosen by the primitive
  std::optional<dnnl::reorder> reorder;  // user->prim (in) or prim->user (out)
  size_t ws_offset = 0;         // temporary's offset in the workspace
};

// A ready-to-run convolution: primitive, its argument slots and workspace
// layout. Immutable after construction, shared across threads.
struct Plan {
  dnnl::primitive primitive;
  std::vector<Slot> slots;
  memory::desc scratchpad_md;
  size_t scratchpad_offset = 0;
  size_t workspace_bytes = 0;
};

size_t AlignUp(size_t x) { return (x + kAlign - 1) / kAlign * kAlign; }

// Geometry of the problem in oneDNN's logical dimension order.
struct Geometry {
  memory::dims src, weights, bias, dst, strides, pad_l, pad_r;
};

Geometry MakeGeometry(const ConvKey& k) {
  const int64_t pad_h = (k.kh - 1) / 2, pad_w = (k.kw - 1) / 2;
  return Geometry{
      /*src=*/{k.n, k.cin, k.h, k.w},
      /*weights=*/{k.cout, k.cin, k.kh, k.kw},
      /*bias=*/{k.cout},
      /*dst=*/{k.n, k.cout, k.h, k.w},
      /*strides=*/{1, 1},
      /*pad_l=*/{pad_h, pad_w},
      /*pad_r=*/{k.kh - 1 - pad_h, k.kw - 1 - pad_w},
  };
}

memory::desc Md(const memory::dims& dims, Tag tag) {
  return memory::desc(dims, memory::data_type::f32, tag);
}

// Adds a slot and, when the primitive picked a layout different from the
// plain one, the reorder between them plus room for the temporary.
void AddSlot(Plan& plan, size_t& ws_bytes, int arg, bool is_output,
             const memory::desc& user_md, const memory::desc& prim_md) {
  Slot slot;
  slot.arg = arg;
  slot.is_output = is_output;
  slot.user_md = user_md;
  slot.prim_md = prim_md;
  if (prim_md != user_md) {
    const dnnl::engine& eng = Engine();
    slot.reorder = is_output
                       ? dnnl::reorder(dnnl::reorder::primitive_desc(
                             eng, prim_md, eng, user_md))
                       : dnnl::reorder(dnnl::reorder::primitive_desc(
                             eng, user_md, eng, prim_md));
    slot.ws_offset = ws_bytes;
    ws_bytes += AlignUp(prim_md.get_size());
  }
  plan.slots.push_back(std::move(slot));
}

// The layout a plan uses: `k.layout`, with 3 (auto) resolved for this op and
// CPU (see the top of the file).
Layout EffectiveLayout(const ConvKey& k) {
  const Layout layout = static_cast<Layout>(k.layout);
  if (layout != Layout::kAuto) return layout;
  const bool blocked_bwd_weights = static_cast<Op>(k.op) == Op::kBackwardWeights &&
                                   k.cin % 8 == 0 && k.cout % 8 == 0 &&
                                   !HasAvx512Core();
  return blocked_bwd_weights ? Layout::kAny : Layout::kAnyWeights;
}

// Forward primitive descriptor; also serves as the hint for the backward
// primitives (built with the same layout as the primitive it hints).
dnnl::convolution_forward::primitive_desc MakeForwardPd(
    const ConvKey& k, const Geometry& g, const dnnl::primitive_attr& attr) {
  const Layout layout = EffectiveLayout(k);
  const Tag act = layout == Layout::kAny ? Tag::any : Tag::nhwc;
  const Tag wei = layout == Layout::kPlain ? Tag::hwio : Tag::any;
  const auto algo = dnnl::algorithm::convolution_direct;
  const auto prop = dnnl::prop_kind::forward_training;
  if (k.has_bias) {
    return dnnl::convolution_forward::primitive_desc(
        Engine(), prop, algo, Md(g.src, act), Md(g.weights, wei),
        Md(g.bias, Tag::x), Md(g.dst, act), g.strides, g.pad_l, g.pad_r, attr);
  }
  return dnnl::convolution_forward::primitive_desc(
      Engine(), prop, algo, Md(g.src, act), Md(g.weights, wei), Md(g.dst, act),
      g.strides, g.pad_l, g.pad_r, attr);
}

// Builds the plan for one (op, shape, layout, threads) combination. Slots are
// ordered as the handler passes its buffers:
//   forward:          src, weights, [bias], dst
//   backward data:    diff_dst, weights, diff_src
//   backward weights: src, diff_dst, diff_weights, [diff_bias]
std::shared_ptr<const Plan> CreatePlan(const ConvKey& k) {
  const Geometry g = MakeGeometry(k);
  const Layout layout = EffectiveLayout(k);
  const Tag act = layout == Layout::kAny ? Tag::any : Tag::nhwc;
  const Tag wei = layout == Layout::kPlain ? Tag::hwio : Tag::any;
  const auto algo = dnnl::algorithm::convolution_direct;

  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);

  const memory::desc src_u = Md(g.src, Tag::nhwc);
  const memory::desc wei_u = Md(g.weights, Tag::hwio);
  const memory::desc bias_u = Md(g.bias, Tag::x);
  const memory::desc dst_u = Md(g.dst, Tag::nhwc);

  auto plan = std::make_shared<Plan>();
  size_t ws = 0;
  auto fwd_pd = MakeForwardPd(k, g, attr);

  switch (static_cast<Op>(k.op)) {
    case Op::kForward: {
      plan->primitive = dnnl::convolution_forward(fwd_pd);
      AddSlot(*plan, ws, DNNL_ARG_SRC, false, src_u, fwd_pd.src_desc());
      AddSlot(*plan, ws, DNNL_ARG_WEIGHTS, false, wei_u, fwd_pd.weights_desc());
      if (k.has_bias) {
        AddSlot(*plan, ws, DNNL_ARG_BIAS, false, bias_u, fwd_pd.bias_desc());
      }
      AddSlot(*plan, ws, DNNL_ARG_DST, true, dst_u, fwd_pd.dst_desc());
      plan->scratchpad_md = fwd_pd.scratchpad_desc();
      break;
    }
    case Op::kBackwardData: {
      dnnl::convolution_backward_data::primitive_desc pd(
          Engine(), algo, Md(g.src, act), Md(g.weights, wei), Md(g.dst, act),
          g.strides, g.pad_l, g.pad_r, fwd_pd, attr);
      plan->primitive = dnnl::convolution_backward_data(pd);
      AddSlot(*plan, ws, DNNL_ARG_DIFF_DST, false, dst_u, pd.diff_dst_desc());
      AddSlot(*plan, ws, DNNL_ARG_WEIGHTS, false, wei_u, pd.weights_desc());
      AddSlot(*plan, ws, DNNL_ARG_DIFF_SRC, true, src_u, pd.diff_src_desc());
      plan->scratchpad_md = pd.scratchpad_desc();
      break;
    }
    case Op::kBackwardWeights: {
      auto make = [&]() {
        if (k.has_bias) {
          return dnnl::convolution_backward_weights::primitive_desc(
              Engine(), algo, Md(g.src, act), Md(g.weights, wei),
              Md(g.bias, Tag::x), Md(g.dst, act), g.strides, g.pad_l, g.pad_r,
              fwd_pd, attr);
        }
        return dnnl::convolution_backward_weights::primitive_desc(
            Engine(), algo, Md(g.src, act), Md(g.weights, wei), Md(g.dst, act),
            g.strides, g.pad_l, g.pad_r, fwd_pd, attr);
      };
      auto pd = make();
      plan->primitive = dnnl::convolution_backward_weights(pd);
      AddSlot(*plan, ws, DNNL_ARG_SRC, false, src_u, pd.src_desc());
      AddSlot(*plan, ws, DNNL_ARG_DIFF_DST, false, dst_u, pd.diff_dst_desc());
      AddSlot(*plan, ws, DNNL_ARG_DIFF_WEIGHTS, true, wei_u,
              pd.diff_weights_desc());
      if (k.has_bias) {
        AddSlot(*plan, ws, DNNL_ARG_DIFF_BIAS, true, bias_u,
                pd.diff_bias_desc());
      }
      plan->scratchpad_md = pd.scratchpad_desc();
      break;
    }
  }
  plan->scratchpad_offset = ws;
  ws += AlignUp(plan->scratchpad_md.get_size());
  plan->workspace_bytes = ws;
  return plan;
}

// Thread-safe plan cache keyed by the full problem description.
class PlanCache {
 public:
  std::shared_ptr<const Plan> Get(const ConvKey& key) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = plans_.find(key);
    if (it != plans_.end()) return it->second;
    // Creation happens under the lock: it is rare (once per shape) and keeps
    // two threads from building the same primitive twice.
    auto plan = CreatePlan(key);
    plans_.emplace(key, plan);
    return plan;
  }

  size_t Size() {
    std::lock_guard<std::mutex> lock(mutex_);
    return plans_.size();
  }

  void Clear() {
    std::lock_guard<std::mutex> lock(mutex_);
    plans_.clear();
  }

 private:
  std::mutex mutex_;
  std::unordered_map<ConvKey, std::shared_ptr<const Plan>, ConvKeyHash> plans_;
};

PlanCache& Cache() {
  static PlanCache* cache = new PlanCache();  // Never destroyed (exit order).
  return *cache;
}

// Runs a plan on the given buffers (one pointer per slot, in slot order).
void Execute(const Plan& plan, const std::vector<void*>& buffers) {
  const dnnl::engine& eng = Engine();
  dnnl::stream& stream = ThreadStream();
  char* ws = ThreadWorkspace(plan.workspace_bytes);

  std::unordered_map<int, memory> args;
  std::vector<std::pair<const Slot*, memory>> pending_outputs;
  for (size_t i = 0; i < plan.slots.size(); ++i) {
    const Slot& slot = plan.slots[i];
    memory user(slot.user_md, eng, buffers[i]);
    if (!slot.reorder) {
      args.emplace(slot.arg, user);
      continue;
    }
    memory tmp(slot.prim_md, eng, ws + slot.ws_offset);
    if (slot.is_output) {
      pending_outputs.emplace_back(&slot, user);
    } else {
      slot.reorder->execute(stream, user, tmp);
    }
    args.emplace(slot.arg, tmp);
  }
  args.emplace(DNNL_ARG_SCRATCHPAD,
               memory(plan.scratchpad_md, eng, ws + plan.scratchpad_offset));
  plan.primitive.execute(stream, args);
  for (auto& [slot, user] : pending_outputs) {
    slot->reorder->execute(stream, args.at(slot->arg), user);
  }
  stream.wait();
}

// Common driver: resolves threads, fetches the cached plan, runs it.
ffi::Error Run(ffi::ThreadPool& pool, ConvKey key,
               const std::vector<void*>& buffers) {
  try {
    key.num_threads = ResolveNumThreads(pool);
    g_last_num_threads.store(key.num_threads);
    // Set before creation (oneDNN sizes its work split then) and execution.
    omp_set_num_threads(key.num_threads);
    std::shared_ptr<const Plan> plan = Cache().Get(key);
    if (g_serialize.load()) {
      std::lock_guard<std::mutex> lock(g_exec_mutex);
      Execute(*plan, buffers);
    } else {
      Execute(*plan, buffers);
    }
    return ffi::Error::Success();
  } catch (const dnnl::error& e) {
    return ffi::Error::Internal(std::string("oneDNN error: ") + e.what());
  } catch (const std::exception& e) {
    return ffi::Error::Internal(std::string("onednn_conv: ") + e.what());
  }
}

std::string DimsStr(ffi::Span<const int64_t> d) {
  std::string s = "[";
  for (size_t i = 0; i < d.size(); ++i) {
    s += (i ? "," : "") + std::to_string(d[i]);
  }
  return s + "]";
}

// Validates shapes and builds the key from x [N,H,W,Cin], w [KH,KW,Cin,Cout]
// and the activation-gradient/output shape y [N,H,W,Cout].
ffi::ErrorOr<ConvKey> MakeKey(Op op, ffi::Span<const int64_t> x,
                              ffi::Span<const int64_t> w,
                              ffi::Span<const int64_t> y, int64_t layout,
                              bool has_bias) {
  if (x[3] != w[2] || y[0] != x[0] || y[1] != x[1] || y[2] != x[2] ||
      y[3] != w[3]) {
    return ffi::Unexpected(ffi::Error::InvalidArgument(
        "onednn_conv: inconsistent shapes x=" + DimsStr(x) + " w=" +
        DimsStr(w) + " y=" + DimsStr(y) +
        " (expected NHWC x, HWIO w, SAME stride-1 output)"));
  }
  if (layout < 0 || layout > 3) {
    return ffi::Unexpected(ffi::Error::InvalidArgument(
        "onednn_conv: layout must be 0 (plain), 1 (any_weights), 2 (any) or 3 (auto)"));
  }
  ConvKey k;
  std::memset(&k, 0, sizeof(k));  // Padding-free, but keep memcmp exact.
  k.n = x[0];
  k.h = x[1];
  k.w = x[2];
  k.cin = x[3];
  k.kh = w[0];
  k.kw = w[1];
  k.cout = w[3];
  k.op = static_cast<int>(op);
  k.layout = static_cast<int>(layout);
  k.has_bias = has_bias ? 1 : 0;
  return k;
}

// Empty arrays: XLA may hand over null pointers; oneDNN rejects zero dims.
bool IsEmpty(ffi::Span<const int64_t> d) {
  for (int64_t v : d) {
    if (v == 0) return true;
  }
  return false;
}

// ---------------------------------------------------------------------------
// FFI handler implementations.
// ---------------------------------------------------------------------------

// y = conv(x, w) (+ b). Optional bias is the third (remaining) argument.
ffi::Error Conv2dForwardImpl(ffi::ThreadPool pool, F32Buffer x, F32Buffer w,
                             ffi::RemainingArgs rest,
                             ffi::ResultBuffer<ffi::F32, 4> y,
                             int64_t layout) {
  std::optional<ffi::Buffer<ffi::F32, 1>> bias;
  if (rest.size() > 1) {
    return ffi::Error::InvalidArgument("onednn_conv: too many arguments");
  }
  if (rest.size() == 1) {
    auto b = rest.get<ffi::Buffer<ffi::F32, 1>>(0);
    if (b.has_error()) return b.error();
    if (b->dimensions()[0] != w.dimensions()[3]) {
      return ffi::Error::InvalidArgument("onednn_conv: bias must be [Cout]");
    }
    bias = *b;
  }
  auto key = MakeKey(Op::kForward, x.dimensions(), w.dimensions(),
                     y->dimensions(), layout, bias.has_value());
  if (key.has_error()) return key.error();
  if (IsEmpty(y->dimensions())) return ffi::Error::Success();
  if (IsEmpty(x.dimensions())) {  // Cin == 0: output is just the bias.
    return ffi::Error::InvalidArgument("onednn_conv: Cin must be > 0");
  }
  std::vector<void*> buffers = {x.untyped_data(), w.untyped_data()};
  if (bias) buffers.push_back(bias->untyped_data());
  buffers.push_back(y->untyped_data());
  return Run(pool, *key, buffers);
}

// dx = conv_transpose(dy, w), i.e. the gradient of conv(x, w) w.r.t. x.
ffi::Error Conv2dBackwardDataImpl(ffi::ThreadPool pool, F32Buffer dy,
                                  F32Buffer w,
                                  ffi::ResultBuffer<ffi::F32, 4> dx,
                                  int64_t layout) {
  auto key = MakeKey(Op::kBackwardData, dx->dimensions(), w.dimensions(),
                     dy.dimensions(), layout, /*has_bias=*/false);
  if (key.has_error()) return key.error();
  if (IsEmpty(dx->dimensions())) return ffi::Error::Success();
  if (IsEmpty(dy.dimensions())) {
    return ffi::Error::InvalidArgument("onednn_conv: Cout must be > 0");
  }
  return Run(pool, *key, {dy.untyped_data(), w.untyped_data(),
                          dx->untyped_data()});
}

// dw = gradient w.r.t. w; optional second result db = sum of dy over N, H, W.
ffi::Error Conv2dBackwardWeightsImpl(ffi::ThreadPool pool, F32Buffer x,
                                     F32Buffer dy,
                                     ffi::ResultBuffer<ffi::F32, 4> dw,
                                     ffi::RemainingRets rest, int64_t layout) {
  std::optional<ffi::Result<ffi::Buffer<ffi::F32, 1>>> db;
  if (rest.size() > 1) {
    return ffi::Error::InvalidArgument("onednn_conv: too many results");
  }
  if (rest.size() == 1) {
    auto b = rest.get<ffi::Buffer<ffi::F32, 1>>(0);
    if (b.has_error()) return b.error();
    db = *b;
  }
  auto key = MakeKey(Op::kBackwardWeights, x.dimensions(), dw->dimensions(),
                     dy.dimensions(), layout, db.has_value());
  if (key.has_error()) return key.error();
  if (IsEmpty(x.dimensions()) || IsEmpty(dw->dimensions())) {
    // N*H*W == 0 would need zero-filled gradients; not needed by the model.
    return ffi::Error::InvalidArgument("onednn_conv: empty input");
  }
  std::vector<void*> buffers = {x.untyped_data(), dy.untyped_data(),
                                dw->untyped_data()};
  if (db) buffers.push_back((*db)->untyped_data());
  return Run(pool, *key, buffers);
}

}  // namespace
}  // namespace onednn_conv

// ---------------------------------------------------------------------------
// Exported symbols.
// ---------------------------------------------------------------------------

ONEDNN_CONV_EXPORT XLA_FFI_Error* OnednnConv2dForward(XLA_FFI_CallFrame*);
ONEDNN_CONV_EXPORT XLA_FFI_Error* OnednnConv2dBackwardData(XLA_FFI_CallFrame*);
ONEDNN_CONV_EXPORT XLA_FFI_Error* OnednnConv2dBackwardWeights(
    XLA_FFI_CallFrame*);

XLA_FFI_DEFINE_HANDLER_SYMBOL(OnednnConv2dForward,
                              onednn_conv::Conv2dForwardImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<onednn_conv::F32Buffer>()  // x
                                  .Arg<onednn_conv::F32Buffer>()  // w
                                  .RemainingArgs()                // [b]
                                  .Ret<onednn_conv::F32Buffer>()  // y
                                  .Attr<int64_t>("layout"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(OnednnConv2dBackwardData,
                              onednn_conv::Conv2dBackwardDataImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<onednn_conv::F32Buffer>()  // dy
                                  .Arg<onednn_conv::F32Buffer>()  // w
                                  .Ret<onednn_conv::F32Buffer>()  // dx
                                  .Attr<int64_t>("layout"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(OnednnConv2dBackwardWeights,
                              onednn_conv::Conv2dBackwardWeightsImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<onednn_conv::F32Buffer>()  // x
                                  .Arg<onednn_conv::F32Buffer>()  // dy
                                  .Ret<onednn_conv::F32Buffer>()  // dw
                                  .RemainingRets()                // [db]
                                  .Attr<int64_t>("layout"));

// The threading the library's other handlers share (cpu_runtime.h).
namespace sejax_cpu {
int ResolveNumThreads(xla::ffi::ThreadPool& pool) {
  return onednn_conv::ResolveNumThreads(pool);
}
std::mutex& ExecMutex() { return onednn_conv::g_exec_mutex; }
bool Serialize() { return onednn_conv::g_serialize.load(); }
}  // namespace sejax_cpu

// Plain C configuration / introspection API (called through ctypes).

// Sets the oneDNN thread count; n <= 0 means "match XLA's intra-op pool".
ONEDNN_CONV_EXPORT void OnednnConvSetNumThreads(int n) {
  onednn_conv::g_num_threads.store(n);
}

ONEDNN_CONV_EXPORT int OnednnConvGetNumThreads() {
  return onednn_conv::g_num_threads.load();
}

// Thread count resolved by the most recent call (0 before the first call).
ONEDNN_CONV_EXPORT int OnednnConvLastUsedNumThreads() {
  return onednn_conv::g_last_num_threads.load();
}

// Serialize oneDNN executions across XLA threads (1, default) or not (0).
ONEDNN_CONV_EXPORT void OnednnConvSetSerialize(int on) {
  onednn_conv::g_serialize.store(on != 0);
}

ONEDNN_CONV_EXPORT long OnednnConvCacheSize() {
  return static_cast<long>(onednn_conv::Cache().Size());
}

ONEDNN_CONV_EXPORT void OnednnConvClearCache() { onednn_conv::Cache().Clear(); }

// Writes "oneDNN X.Y.Z (cpu runtime: NAME)" into buf; returns its length.
ONEDNN_CONV_EXPORT int OnednnConvVersion(char* buf, int len) {
  const dnnl_version_t* v = dnnl_version();
  const char* rt = "other";
  switch (v->cpu_runtime) {
    case DNNL_RUNTIME_OMP: rt = "OpenMP"; break;
    case DNNL_RUNTIME_TBB: rt = "TBB"; break;
    case DNNL_RUNTIME_SEQ: rt = "sequential"; break;
    case DNNL_RUNTIME_THREADPOOL: rt = "threadpool"; break;
    case DNNL_RUNTIME_SYCL: rt = "SYCL"; break;
  }
  std::string s = "oneDNN " + std::to_string(v->major) + "." +
                  std::to_string(v->minor) + "." + std::to_string(v->patch) +
                  " (cpu runtime: " + rt + ")";
  if (buf != nullptr && len > 0) {
    std::strncpy(buf, s.c_str(), static_cast<size_t>(len) - 1);
    buf[len - 1] = '\0';
  }
  return static_cast<int>(s.size());
}
