// Prototype: a conv block's BatchNorm (affine, statistics given) -> ReLU -> 2x2 max-pool,
// forward and backward in one pass each over the full-size activation (NHWC, float32).
#include <omp.h>
#include <cstdint>
#include "xla/ffi/api/ffi.h"
namespace ffi = xla::ffi;
#define EXPORT extern "C" __attribute__((visibility("default")))

namespace {
using F4 = ffi::Buffer<ffi::F32, 4>;
using F1 = ffi::Buffer<ffi::F32, 1>;
using U4 = ffi::Buffer<ffi::U8, 4>;

// p = maxpool(relu(a*c + b)); idx = window position (0..3) of the max, 4 when the max <= 0.
ffi::Error Fwd(F4 c, F1 a, F1 b, ffi::ResultBuffer<ffi::F32, 4> p, ffi::ResultBuffer<ffi::U8, 4> idx) {
  auto d = c.dimensions();
  const int64_t N = d[0], H = d[1], W = d[2], C = d[3], H2 = H / 2, W2 = W / 2;
  const float* x = c.typed_data(); const float* A = a.typed_data(); const float* B = b.typed_data();
  float* out = p->typed_data(); uint8_t* ix = idx->typed_data();
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < N * H2; ++r) {
    const int64_t n = r / H2, i = r % H2;
    const float* row0 = x + ((n * H + 2 * i) * W) * C;
    const float* row1 = row0 + W * C;
    float* o = out + r * W2 * C; uint8_t* k = ix + r * W2 * C;
    for (int64_t j = 0; j < W2; ++j) {
      const float* p00 = row0 + 2 * j * C; const float* p01 = p00 + C;
      const float* p10 = row1 + 2 * j * C; const float* p11 = p10 + C;
      float* oj = o + j * C; uint8_t* kj = k + j * C;
#pragma omp simd
      for (int64_t ch = 0; ch < C; ++ch) {
        const float s = A[ch], t = B[ch];
        float v0 = s * p00[ch] + t, v1 = s * p01[ch] + t, v2 = s * p10[ch] + t, v3 = s * p11[ch] + t;
        float m = v0; uint8_t q = 0;
        if (v1 > m) { m = v1; q = 1; }
        if (v2 > m) { m = v2; q = 2; }
        if (v3 > m) { m = v3; q = 3; }
        const bool on = m > 0.f;
        oj[ch] = on ? m : 0.f; kj[ch] = on ? q : 4;
      }
    }
  }
  return ffi::Error::Success();
}

// xs = c at each window's argmax (0 where the window is inactive).
ffi::Error Gather(F4 c, U4 idx, ffi::ResultBuffer<ffi::F32, 4> xs) {
  auto d = c.dimensions();
  const int64_t N = d[0], H = d[1], W = d[2], C = d[3], H2 = H / 2, W2 = W / 2;
  const float* x = c.typed_data(); const uint8_t* ix = idx.typed_data(); float* out = xs->typed_data();
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < N * H2; ++r) {
    const int64_t n = r / H2, i = r % H2;
    const float* row0 = x + ((n * H + 2 * i) * W) * C;
    const float* row1 = row0 + W * C;
    for (int64_t j = 0; j < W2; ++j) {
      const float* q[4] = {row0 + 2 * j * C, row0 + (2 * j + 1) * C, row1 + 2 * j * C, row1 + (2 * j + 1) * C};
      const uint8_t* kj = ix + (r * W2 + j) * C; float* oj = out + (r * W2 + j) * C;
      for (int64_t ch = 0; ch < C; ++ch) {
        const uint8_t k = kj[ch];
        oj[ch] = k < 4 ? q[k][ch] : 0.f;
      }
    }
  }
  return ffi::Error::Success();
}

// dx = u + v*c everywhere, plus alpha*g at each active window's argmax.
ffi::Error Bwd(F4 c, U4 idx, F4 g, F1 alpha, F1 u, F1 v, ffi::ResultBuffer<ffi::F32, 4> dx) {
  auto d = c.dimensions();
  const int64_t N = d[0], H = d[1], W = d[2], C = d[3], H2 = H / 2, W2 = W / 2;
  const float* x = c.typed_data(); const uint8_t* ix = idx.typed_data(); const float* G = g.typed_data();
  const float* Al = alpha.typed_data(); const float* U = u.typed_data(); const float* V = v.typed_data();
  float* out = dx->typed_data();
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < N * H; ++r) {
    const int64_t n = r / H, h = r % H, i = h / 2, di = h % 2;
    const bool pooled_row = i < H2;
    const float* xr = x + r * W * C; float* orow = out + r * W * C;
    for (int64_t w = 0; w < W; ++w) {
      const float* xw = xr + w * C; float* ow = orow + w * C;
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
  return ffi::Error::Success();
}
}  // namespace

EXPORT XLA_FFI_Error* BrpFwd(XLA_FFI_CallFrame*);
EXPORT XLA_FFI_Error* BrpGather(XLA_FFI_CallFrame*);
EXPORT XLA_FFI_Error* BrpBwd(XLA_FFI_CallFrame*);
XLA_FFI_DEFINE_HANDLER_SYMBOL(BrpFwd, Fwd, ffi::Ffi::Bind().Arg<F4>().Arg<F1>().Arg<F1>().Ret<F4>().Ret<U4>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(BrpGather, Gather, ffi::Ffi::Bind().Arg<F4>().Arg<U4>().Ret<F4>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(BrpBwd, Bwd, ffi::Ffi::Bind().Arg<F4>().Arg<U4>().Arg<F4>().Arg<F1>().Arg<F1>().Arg<F1>().Ret<F4>());
