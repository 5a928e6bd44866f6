// A conv block's BatchNorm (as a per-channel affine map a*x + b) -> ReLU -> 2x2 max-pool
// (stride 2, VALID, floor), forward and backward in one pass each over the full-size
// activation, NHWC float32, as XLA FFI handlers. Written by hand because XLA:CPU spends
// about half of sejax's train step on these memory-bound passes (benchmarks/step_profile.py)
// and no library offers them fused with the max-pool's argmax; measured 1.5x faster than
// XLA's fusion of the same math (benchmarks/block_rest_fused.py).
//
// Exported handlers:
//   SejaxBnReluPoolForward   x, a, b              -> p, idx
//       p = maxpool(relu(a*x + b)) (NaN where the window holds one); idx = the window
//       position (0..3, row-major) of the first maximum, 4 when the window's maximum is <= 0
//       (ReLU's gradient is zero there).
//   SejaxBnReluPoolForwardKeep x, a, b            -> p, idx, xs
//       the same, and xs = x at each window's argmax (0 where idx == 4), which the backward's
//       per-channel sums need: written here, where x is already in registers, instead of
//       read again from the full-size x in the backward.
//   SejaxBnReluPoolGather    x, idx               -> xs
//       xs alone, from x and idx.
//   SejaxBnReluPoolBackward  x, idx, g, alpha, u, v -> dx
//       dx = u + v*x everywhere, plus alpha*g at each active window's argmax (the BatchNorm
//       gradient once its per-channel sums are known; rows and columns the floor drops get
//       the affine part only).
// The per-channel statistics and sums stay in XLA (they are reductions XLA does well, and
// psums under pmap/shard_map need them there).
#include <omp.h>

#include <cstdint>
#include <string>

#include "cpu_runtime.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

#define SEJAX_EXPORT extern "C" __attribute__((visibility("default")))

// The library is built with the compiler's baseline flags (it may be built once and used on
// another x86-64 CPU), which leave these memory-bound loops in SSE2. GCC's function
// multi-versioning compiles each row kernel for AVX-512 and AVX2 as well and picks one at load
// time: measured 1.5x (prototype at -march=x86-64-v3) against 1.1x (baseline) over XLA.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define SEJAX_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define SEJAX_CLONES
#endif

namespace bn_relu_pool {
namespace {

using F4 = ffi::Buffer<ffi::F32, 4>;
using F1 = ffi::Buffer<ffi::F32, 1>;
using U4 = ffi::Buffer<ffi::U8, 4>;
constexpr uint8_t kInactive = 4;

struct Dims {
  int64_t n, h, w, c, h2, w2;
};

// The input's dimensions, or an error naming what does not fit.
ffi::Error GetDims(const F4& x, Dims* d) {
  auto s = x.dimensions();
  *d = {s[0], s[1], s[2], s[3], s[1] / 2, s[2] / 2};
  if (d->h2 < 1 || d->w2 < 1) {
    return ffi::Error::InvalidArgument("bn_relu_pool: H and W must be >= 2, got " +
                                       std::to_string(d->h) + "x" + std::to_string(d->w));
  }
  return ffi::Error::Success();
}

ffi::Error CheckChannels(const F1& v, const Dims& d, const char* name) {
  if (v.dimensions()[0] != d.c) {
    return ffi::Error::InvalidArgument(std::string("bn_relu_pool: ") + name + " has " +
                                       std::to_string(v.dimensions()[0]) + " channels, x has " +
                                       std::to_string(d.c));
  }
  return ffi::Error::Success();
}

ffi::Error CheckPooled(ffi::Span<const int64_t> s, const Dims& d, const char* name) {
  if (s[0] != d.n || s[1] != d.h2 || s[2] != d.w2 || s[3] != d.c) {
    return ffi::Error::InvalidArgument(std::string("bn_relu_pool: ") + name +
                                       " is not the pooled shape of x");
  }
  return ffi::Error::Success();
}

#define SEJAX_RETURN_IF_ERROR(expr)      \
  do {                                   \
    ffi::Error e_ = (expr);              \
    if (e_.failure()) return e_;         \
  } while (0)

// Window row r (of N * H2) of the forward; `kept` is null when xs is not wanted.
SEJAX_CLONES void ForwardRow(int64_t r, const Dims& d, const float* x, const float* A,
                             const float* B, float* out, uint8_t* ix, float* kept) {
  const int64_t W = d.w, C = d.c, H = d.h, H2 = d.h2, W2 = d.w2;
  const int64_t n = r / H2, i = r % H2;
  const float* row0 = x + ((n * H + 2 * i) * W) * C;
  const float* row1 = row0 + W * C;
  for (int64_t j = 0; j < W2; ++j) {
    const float* p00 = row0 + 2 * j * C;
    const float* p01 = p00 + C;
    const float* p10 = row1 + 2 * j * C;
    const float* p11 = p10 + C;
    const int64_t o = (r * W2 + j) * C;
    float* oj = out + o;
    uint8_t* kj = ix + o;
    float* xj = kept == nullptr ? nullptr : kept + o;
#pragma omp simd
    for (int64_t ch = 0; ch < C; ++ch) {
      const float s = A[ch], t = B[ch];
      const float x0 = p00[ch], x1 = p01[ch], x2 = p10[ch], x3 = p11[ch];
      const float v0 = s * x0 + t, v1 = s * x1 + t, v2 = s * x2 + t, v3 = s * x3 + t;
      float m = v0, xm = x0;
      uint8_t q = 0;
      if (v1 > m) { m = v1; xm = x1; q = 1; }  // ties keep the first, as XLA's pool does
      if (v2 > m) { m = v2; xm = x2; q = 2; }
      if (v3 > m) { m = v3; xm = x3; q = 3; }
      const bool on = m > 0.f;
      // NaN anywhere in the window gives NaN, as XLA's ReLU (a max with 0) and pool do, so a
      // non-finite batch shows in the loss (its gradient is NaN through the statistics).
      const bool nan = (v0 != v0) | (v1 != v1) | (v2 != v2) | (v3 != v3);
      oj[ch] = nan ? v0 + v1 + v2 + v3 : (on ? m : 0.f);
      kj[ch] = on ? q : kInactive;
      xm = on ? xm : 0.f;
      if (xj != nullptr) xj[ch] = xm;
    }
  }
}

ffi::Error Forward(ffi::ThreadPool& pool, const F4& x, const F1& a, const F1& b, float* out,
                   ffi::Span<const int64_t> p_dims, uint8_t* ix, float* kept) {
  Dims d;
  SEJAX_RETURN_IF_ERROR(GetDims(x, &d));
  SEJAX_RETURN_IF_ERROR(CheckChannels(a, d, "a"));
  SEJAX_RETURN_IF_ERROR(CheckChannels(b, d, "b"));
  SEJAX_RETURN_IF_ERROR(CheckPooled(p_dims, d, "p"));
  const float* xs = x.typed_data();
  const float* A = a.typed_data();
  const float* B = b.typed_data();
  const int64_t rows = d.n * d.h2;
  sejax_cpu::RunSerialized(pool, [&](int threads) {
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t r = 0; r < rows; ++r) ForwardRow(r, d, xs, A, B, out, ix, kept);
  });
  return ffi::Error::Success();
}

ffi::Error ForwardImpl(ffi::ThreadPool pool, F4 x, F1 a, F1 b, ffi::ResultBuffer<ffi::F32, 4> p,
                       ffi::ResultBuffer<ffi::U8, 4> idx) {
  return Forward(pool, x, a, b, p->typed_data(), p->dimensions(), idx->typed_data(),
                        nullptr);
}

ffi::Error ForwardKeepImpl(ffi::ThreadPool pool, F4 x, F1 a, F1 b,
                           ffi::ResultBuffer<ffi::F32, 4> p, ffi::ResultBuffer<ffi::U8, 4> idx,
                           ffi::ResultBuffer<ffi::F32, 4> xs) {
  return Forward(pool, x, a, b, p->typed_data(), p->dimensions(), idx->typed_data(),
                       xs->typed_data());
}

ffi::Error GatherImpl(ffi::ThreadPool pool, F4 x, U4 idx, ffi::ResultBuffer<ffi::F32, 4> xs_out) {
  Dims d;
  SEJAX_RETURN_IF_ERROR(GetDims(x, &d));
  SEJAX_RETURN_IF_ERROR(CheckPooled(idx.dimensions(), d, "idx"));
  const float* xs = x.typed_data();
  const uint8_t* ix = idx.typed_data();
  float* out = xs_out->typed_data();
  const int64_t W = d.w, C = d.c, H = d.h, H2 = d.h2, W2 = d.w2, rows = d.n * d.h2;
  sejax_cpu::RunSerialized(pool, [&](int threads) {
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t n = r / H2, i = r % H2;
      const float* row0 = xs + ((n * H + 2 * i) * W) * C;
      const float* row1 = row0 + W * C;
      for (int64_t j = 0; j < W2; ++j) {
        const float* q[4] = {row0 + 2 * j * C, row0 + (2 * j + 1) * C, row1 + 2 * j * C,
                             row1 + (2 * j + 1) * C};
        const uint8_t* kj = ix + (r * W2 + j) * C;
        float* oj = out + (r * W2 + j) * C;
        for (int64_t ch = 0; ch < C; ++ch) {
          const uint8_t k = kj[ch];
          oj[ch] = k < kInactive ? q[k][ch] : 0.f;
        }
      }
    }
  });
  return ffi::Error::Success();
}

// Input row r (of N * H) of the backward.
SEJAX_CLONES void BackwardRow(int64_t r, const Dims& d, const float* x, const uint8_t* ix,
                              const float* G, const float* Al, const float* U, const float* V,
                              float* out) {
  const int64_t W = d.w, C = d.c, H = d.h, H2 = d.h2, W2 = d.w2;
  const int64_t n = r / H, h = r % H, i = h / 2, di = h % 2;
  const bool pooled_row = i < H2;
  const float* xr = x + r * W * C;
  float* orow = out + r * W * C;
  for (int64_t w = 0; w < W; ++w) {
    const float* xw = xr + w * C;
    float* ow = orow + w * C;
    const int64_t j = w / 2, dj = w % 2;
    if (pooled_row && j < W2) {
      const uint8_t want = static_cast<uint8_t>(2 * di + dj);
      const uint8_t* kj = ix + ((n * H2 + i) * W2 + j) * C;
      const float* gj = G + ((n * H2 + i) * W2 + j) * C;
#pragma omp simd
      for (int64_t ch = 0; ch < C; ++ch)
        ow[ch] = U[ch] + V[ch] * xw[ch] + (kj[ch] == want ? Al[ch] * gj[ch] : 0.f);
    } else {
#pragma omp simd
      for (int64_t ch = 0; ch < C; ++ch) ow[ch] = U[ch] + V[ch] * xw[ch];
    }
  }
}

ffi::Error BackwardImpl(ffi::ThreadPool pool, F4 x, U4 idx, F4 g, F1 alpha, F1 u, F1 v,
                        ffi::ResultBuffer<ffi::F32, 4> dx) {
  Dims d;
  SEJAX_RETURN_IF_ERROR(GetDims(x, &d));
  SEJAX_RETURN_IF_ERROR(CheckPooled(idx.dimensions(), d, "idx"));
  SEJAX_RETURN_IF_ERROR(CheckPooled(g.dimensions(), d, "g"));
  SEJAX_RETURN_IF_ERROR(CheckChannels(alpha, d, "alpha"));
  SEJAX_RETURN_IF_ERROR(CheckChannels(u, d, "u"));
  SEJAX_RETURN_IF_ERROR(CheckChannels(v, d, "v"));
  const float* xs = x.typed_data();
  const uint8_t* ix = idx.typed_data();
  const float* G = g.typed_data();
  const float* Al = alpha.typed_data();
  const float* U = u.typed_data();
  const float* V = v.typed_data();
  float* out = dx->typed_data();
  const int64_t rows = d.n * d.h;
  sejax_cpu::RunSerialized(pool, [&](int threads) {
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t r = 0; r < rows; ++r) BackwardRow(r, d, xs, ix, G, Al, U, V, out);
  });
  return ffi::Error::Success();
}

}  // namespace
}  // namespace bn_relu_pool

SEJAX_EXPORT XLA_FFI_Error* SejaxBnReluPoolForward(XLA_FFI_CallFrame*);
SEJAX_EXPORT XLA_FFI_Error* SejaxBnReluPoolForwardKeep(XLA_FFI_CallFrame*);
SEJAX_EXPORT XLA_FFI_Error* SejaxBnReluPoolGather(XLA_FFI_CallFrame*);
SEJAX_EXPORT XLA_FFI_Error* SejaxBnReluPoolBackward(XLA_FFI_CallFrame*);

XLA_FFI_DEFINE_HANDLER_SYMBOL(SejaxBnReluPoolForward, bn_relu_pool::ForwardImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<bn_relu_pool::F4>()   // x
                                  .Arg<bn_relu_pool::F1>()   // a
                                  .Arg<bn_relu_pool::F1>()   // b
                                  .Ret<bn_relu_pool::F4>()   // p
                                  .Ret<bn_relu_pool::U4>());  // idx

XLA_FFI_DEFINE_HANDLER_SYMBOL(SejaxBnReluPoolForwardKeep, bn_relu_pool::ForwardKeepImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<bn_relu_pool::F4>()   // x
                                  .Arg<bn_relu_pool::F1>()   // a
                                  .Arg<bn_relu_pool::F1>()   // b
                                  .Ret<bn_relu_pool::F4>()   // p
                                  .Ret<bn_relu_pool::U4>()   // idx
                                  .Ret<bn_relu_pool::F4>());  // xs

XLA_FFI_DEFINE_HANDLER_SYMBOL(SejaxBnReluPoolGather, bn_relu_pool::GatherImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<bn_relu_pool::F4>()   // x
                                  .Arg<bn_relu_pool::U4>()   // idx
                                  .Ret<bn_relu_pool::F4>());  // xs

XLA_FFI_DEFINE_HANDLER_SYMBOL(SejaxBnReluPoolBackward, bn_relu_pool::BackwardImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<bn_relu_pool::F4>()   // x
                                  .Arg<bn_relu_pool::U4>()   // idx
                                  .Arg<bn_relu_pool::F4>()   // g
                                  .Arg<bn_relu_pool::F1>()   // alpha
                                  .Arg<bn_relu_pool::F1>()   // u
                                  .Arg<bn_relu_pool::F1>()   // v
                                  .Ret<bn_relu_pool::F4>());  // dx
