// oneDNN convolution primitives as XLA:CPU foreign-function (FFI) calls.
//
// Three handlers, one per pass of a 2-D float32 convolution with NHWC activations and an
// HWIO kernel (the layout of jaxvision's models):
//
//   jaxvision_onednn_conv_fwd     (x, w)  -> y     forward
//   jaxvision_onednn_conv_dgrad   (dy, w) -> dx    input gradient (backward data)
//   jaxvision_onednn_conv_wgrad   (x, dy) -> dw    kernel gradient (backward weights)
//
// Attributes: strides (sh, sw), dilations (dh, dw; 1 = undilated), paddings (pt, pb, pl,
// pr), the feature group count and the math mode (fpmath: 0 computes in float32; 1 lets
// oneDNN multiply in bfloat16 with float32 accumulation where the CPU has bfloat16 units,
// its fpmath_mode::bf16; buffers stay float32 either way).  oneDNN applies that mode to the
// forward and backward-data passes; for the kernel gradient the handler itself rounds the
// two operands to bfloat16 (one reorder each) and runs the bfloat16 primitive, which
// accumulates and writes float32 -- where the CPU has no such primitive it stays float32.
//
// Activations are handed to oneDNN in place (nhwc); the kernel is reordered to and from the
// blocked layout the primitive asks for, which is small next to the activations.  Primitive
// descriptors and primitives are built once per geometry and math mode and kept in a
// process-wide cache; the scratchpad is allocated per call.
//
// jaxvision/layers/onednn.py compiles this file on first use and registers the handlers.

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using dnnl::memory;

namespace {

enum Pass : int { kFwd = 0, kDgrad = 1, kWgrad = 2 };

struct Geometry {
  int64_t n, h, w, c, o, kh, kw, ho, wo;
  int64_t sh, sw, dh, dw, pt, pb, pl, pr, groups, fpmath;

  std::string key(Pass pass) const {
    std::string k(reinterpret_cast<const char*>(this), sizeof(*this));
    k.push_back(static_cast<char>(pass));
    return k;
  }
};

struct Entry {
  dnnl::primitive prim;
  memory::desc src, wei, dst;  // the primitive's (wei possibly blocked)
  bool round_operands = false;  // wgrad in bfloat16: src and dst rounded before the call
  memory::desc user_src, user_dst;  // float32 nhwc, where rounded
  dnnl::reorder round_src, round_dst;
  memory::desc user_wei;       // HWIO (goihw-style with groups)
  memory::desc scratch;
  bool reorder_wei;
  dnnl::reorder to_prim, from_prim;  // HWIO <-> the primitive's kernel layout
};

dnnl::engine& Engine() {
  static dnnl::engine* eng = new dnnl::engine(dnnl::engine::kind::cpu, 0);
  return *eng;
}

memory::desc ActDesc(int64_t n, int64_t c, int64_t h, int64_t w,
                     memory::data_type dt = memory::data_type::f32) {
  return memory::desc({n, c, h, w}, dt, memory::format_tag::nhwc);
}

memory::desc KernelDesc(const Geometry& g, bool any,
                        memory::data_type dt = memory::data_type::f32) {
  if (g.groups == 1) {
    return memory::desc({g.o, g.c, g.kh, g.kw}, dt,
                        any ? memory::format_tag::any : memory::format_tag::hwio);
  }
  // HWIO with I = C / groups and O = groups * Og, as oneDNN's (G, Og, Ig, KH, KW) dims.
  const int64_t gr = g.groups, og = g.o / gr, ig = g.c / gr;
  memory::dims dims = {gr, og, ig, g.kh, g.kw};
  if (any) return memory::desc(dims, dt, memory::format_tag::any);
  // Element strides of HWIO: kh -> kw*Ig*O, kw -> Ig*O, i -> O, o = g*Og + oo -> 1.
  memory::dims strides = {og, 1, g.o, g.kw * ig * g.o, ig * g.o};
  return memory::desc(dims, memory::data_type::f32, strides);
}

// Strides, dilations (oneDNN counts the gaps) and paddings as oneDNN's descriptors take them.
struct Window {
  memory::dims strides, dil, pad_l, pad_r;
  explicit Window(const Geometry& g)
      : strides{g.sh, g.sw}, dil{g.dh - 1, g.dw - 1}, pad_l{g.pt, g.pl}, pad_r{g.pb, g.pr} {}
};

dnnl::primitive_attr Attributes(bool bf16_math) {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  if (bf16_math) attr.set_fpmath_mode(dnnl::fpmath_mode::bf16);
  return attr;
}

// The kernel gradient with bfloat16 operands and a float32 result, or null where oneDNN
// has no such primitive for this CPU and geometry.
std::unique_ptr<Entry> BuildRoundedWgrad(const Geometry& g) {
  auto& eng = Engine();
  const auto bf16 = memory::data_type::bf16;
  const memory::desc src = ActDesc(g.n, g.c, g.h, g.w, bf16);
  const memory::desc dst = ActDesc(g.n, g.o, g.ho, g.wo, bf16);
  const Window win(g);
  const dnnl::primitive_attr attr = Attributes(false);  // the operands are bfloat16 already
  const auto algo = dnnl::algorithm::convolution_direct;
  try {
    dnnl::convolution_forward::primitive_desc fwd(
        eng, dnnl::prop_kind::forward_training, algo, src, KernelDesc(g, true, bf16), dst,
        win.strides, win.dil, win.pad_l, win.pad_r, attr);
    dnnl::convolution_backward_weights::primitive_desc bwd(
        eng, algo, src, KernelDesc(g, true), dst, win.strides, win.dil, win.pad_l, win.pad_r,
        fwd, attr);
    // Only a kernel with bfloat16 instructions is worth the rounding (others emulate).
    const std::string impl = bwd.impl_info_str();
    if (impl.find("amx") == std::string::npos && impl.find("bf16") == std::string::npos) {
      return nullptr;
    }
    auto e = std::make_unique<Entry>();
    e->prim = dnnl::convolution_backward_weights(bwd);
    e->src = src;
    e->dst = dst;
    e->wei = bwd.diff_weights_desc();
    e->user_wei = KernelDesc(g, false);
    e->scratch = bwd.scratchpad_desc();
    e->round_operands = true;
    e->user_src = ActDesc(g.n, g.c, g.h, g.w);
    e->user_dst = ActDesc(g.n, g.o, g.ho, g.wo);
    e->round_src = dnnl::reorder(dnnl::reorder::primitive_desc(eng, e->user_src, eng, src));
    e->round_dst = dnnl::reorder(dnnl::reorder::primitive_desc(eng, e->user_dst, eng, dst));
    e->reorder_wei = !(e->wei == e->user_wei);
    if (e->reorder_wei) {
      e->from_prim = dnnl::reorder(dnnl::reorder::primitive_desc(eng, e->wei, eng, e->user_wei));
    }
    return e;
  } catch (const dnnl::error&) {
    return nullptr;
  }
}

std::unique_ptr<Entry> Build(const Geometry& g, Pass pass) {
  if (pass == kWgrad && g.fpmath == 1) {
    if (auto e = BuildRoundedWgrad(g)) return e;
  }
  auto& eng = Engine();
  auto e = std::make_unique<Entry>();
  const memory::desc src = ActDesc(g.n, g.c, g.h, g.w);
  const memory::desc dst = ActDesc(g.n, g.o, g.ho, g.wo);
  const memory::desc wei_any = KernelDesc(g, true);
  e->user_wei = KernelDesc(g, false);
  const Window win(g);
  const dnnl::primitive_attr attr = Attributes(g.fpmath == 1);
  const auto algo = dnnl::algorithm::convolution_direct;
  dnnl::convolution_forward::primitive_desc fwd(
      eng, dnnl::prop_kind::forward_training, algo, src, wei_any, dst, win.strides, win.dil,
      win.pad_l, win.pad_r, attr);
  e->src = src;
  e->dst = dst;
  if (pass == kFwd) {
    e->prim = dnnl::convolution_forward(fwd);
    e->wei = fwd.weights_desc();
    e->scratch = fwd.scratchpad_desc();
  } else if (pass == kDgrad) {
    dnnl::convolution_backward_data::primitive_desc bwd(
        eng, algo, src, wei_any, dst, win.strides, win.dil, win.pad_l, win.pad_r, fwd, attr);
    e->prim = dnnl::convolution_backward_data(bwd);
    e->wei = bwd.weights_desc();
    e->scratch = bwd.scratchpad_desc();
  } else {
    dnnl::convolution_backward_weights::primitive_desc bwd(
        eng, algo, src, wei_any, dst, win.strides, win.dil, win.pad_l, win.pad_r, fwd, attr);
    e->prim = dnnl::convolution_backward_weights(bwd);
    e->wei = bwd.diff_weights_desc();
    e->scratch = bwd.scratchpad_desc();
  }
  e->reorder_wei = !(e->wei == e->user_wei);
  if (e->reorder_wei) {
    if (pass == kWgrad) {
      e->from_prim = dnnl::reorder(dnnl::reorder::primitive_desc(eng, e->wei, eng, e->user_wei));
    } else {
      e->to_prim = dnnl::reorder(dnnl::reorder::primitive_desc(eng, e->user_wei, eng, e->wei));
    }
  }
  return e;
}

Entry& Lookup(const Geometry& g, Pass pass) {
  static std::mutex mu;
  static auto* cache = new std::unordered_map<std::string, std::unique_ptr<Entry>>();
  const std::string key = g.key(pass);
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache->find(key);
  if (it == cache->end()) it = cache->emplace(key, Build(g, pass)).first;
  return *it->second;
}

struct Buf {  // a 64-byte aligned scratch allocation
  explicit Buf(size_t bytes) : p(bytes ? std::aligned_alloc(64, (bytes + 63) / 64 * 64) : nullptr) {}
  ~Buf() { std::free(p); }
  void* p;
};

ffi::Error Run(Pass pass, ffi::AnyBuffer a, ffi::AnyBuffer b, ffi::Result<ffi::AnyBuffer> out,
               int64_t sh, int64_t sw, int64_t dh, int64_t dw, int64_t pt, int64_t pb,
               int64_t pl, int64_t pr, int64_t groups, int64_t fpmath) {
  // a, b, out: (x, w, y) forward; (dy, w, dx) dgrad; (x, dy, dw) wgrad.
  auto xd = pass == kDgrad ? out->dimensions() : a.dimensions();
  auto wd = pass == kWgrad ? out->dimensions() : b.dimensions();
  auto yd = pass == kFwd ? out->dimensions() : (pass == kDgrad ? a.dimensions() : b.dimensions());
  if (xd.size() != 4 || wd.size() != 4 || yd.size() != 4) {
    return ffi::Error::InvalidArgument("onednn conv: expected 4-D NHWC / HWIO buffers");
  }
  Geometry g{xd[0], xd[1], xd[2], xd[3], wd[3], wd[0], wd[1], yd[1], yd[2],
             sh, sw, dh, dw, pt, pb, pl, pr, groups, fpmath};
  if (fpmath != 0 && fpmath != 1) {
    return ffi::Error::InvalidArgument("onednn conv: fpmath must be 0 (float32) or 1 (bf16)");
  }
  // One call at a time: each runs on all cores through oneDNN's OpenMP threads.  XLA runs
  // independent operations side by side (the two gradients of one convolution); letting two
  // calls share the cores measured no faster in the ResNet-18 train step.
  static std::mutex run_mu;
  std::lock_guard<std::mutex> run_lock(run_mu);
  try {
    Entry& e = Lookup(g, pass);
    auto& eng = Engine();
    dnnl::stream strm(eng);
    Buf scratch(e.scratch.get_size());
    memory scratch_mem(e.scratch, eng, scratch.p);
    std::unique_ptr<Buf> wei_buf;
    void* wei_ptr = pass == kWgrad ? out->untyped_data() : b.untyped_data();
    if (e.reorder_wei) {
      wei_buf = std::make_unique<Buf>(e.wei.get_size());
      if (pass != kWgrad) {
        memory user(e.user_wei, eng, wei_ptr), prim(e.wei, eng, wei_buf->p);
        e.to_prim.execute(strm, user, prim);
      }
    }
    void* prim_wei = e.reorder_wei ? wei_buf->p : wei_ptr;
    memory wei(e.wei, eng, prim_wei);
    if (pass == kFwd) {
      memory src(e.src, eng, a.untyped_data()), dst(e.dst, eng, out->untyped_data());
      e.prim.execute(strm, {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, wei}, {DNNL_ARG_DST, dst},
                            {DNNL_ARG_SCRATCHPAD, scratch_mem}});
    } else if (pass == kDgrad) {
      memory dsrc(e.src, eng, out->untyped_data()), ddst(e.dst, eng, a.untyped_data());
      e.prim.execute(strm, {{DNNL_ARG_DIFF_SRC, dsrc}, {DNNL_ARG_WEIGHTS, wei},
                            {DNNL_ARG_DIFF_DST, ddst}, {DNNL_ARG_SCRATCHPAD, scratch_mem}});
    } else if (e.round_operands) {
      Buf src_buf(e.src.get_size()), dst_buf(e.dst.get_size());
      memory user_src(e.user_src, eng, a.untyped_data()), src(e.src, eng, src_buf.p);
      memory user_dst(e.user_dst, eng, b.untyped_data()), ddst(e.dst, eng, dst_buf.p);
      e.round_src.execute(strm, user_src, src);
      e.round_dst.execute(strm, user_dst, ddst);
      e.prim.execute(strm, {{DNNL_ARG_SRC, src}, {DNNL_ARG_DIFF_WEIGHTS, wei},
                            {DNNL_ARG_DIFF_DST, ddst}, {DNNL_ARG_SCRATCHPAD, scratch_mem}});
      if (e.reorder_wei) {
        memory user(e.user_wei, eng, out->untyped_data());
        e.from_prim.execute(strm, wei, user);
      }
      strm.wait();  // before the rounded copies are freed
    } else {
      memory src(e.src, eng, a.untyped_data()), ddst(e.dst, eng, b.untyped_data());
      e.prim.execute(strm, {{DNNL_ARG_SRC, src}, {DNNL_ARG_DIFF_WEIGHTS, wei},
                            {DNNL_ARG_DIFF_DST, ddst}, {DNNL_ARG_SCRATCHPAD, scratch_mem}});
      if (e.reorder_wei) {
        memory user(e.user_wei, eng, out->untyped_data());
        e.from_prim.execute(strm, wei, user);
      }
    }
    strm.wait();
  } catch (const dnnl::error& err) {
    return ffi::Error::Internal(std::string("onednn conv: ") + err.what());
  }
  return ffi::Error::Success();
}

#define JAXVISION_PASS_IMPL(NAME, PASS)                                                    \
  ffi::Error NAME(ffi::AnyBuffer a, ffi::AnyBuffer b, ffi::Result<ffi::AnyBuffer> out,       \
                  int64_t sh, int64_t sw, int64_t dh, int64_t dw, int64_t pt, int64_t pb,    \
                  int64_t pl, int64_t pr, int64_t groups, int64_t fpmath) {                \
    return Run(PASS, a, b, out, sh, sw, dh, dw, pt, pb, pl, pr, groups, fpmath);           \
  }

JAXVISION_PASS_IMPL(FwdImpl, kFwd)
JAXVISION_PASS_IMPL(DgradImpl, kDgrad)
JAXVISION_PASS_IMPL(WgradImpl, kWgrad)

}  // namespace

#define JAXVISION_BINDING                                                                  \
  ffi::Ffi::Bind()                                                                         \
      .Arg<ffi::AnyBuffer>()                                                               \
      .Arg<ffi::AnyBuffer>()                                                               \
      .Ret<ffi::AnyBuffer>()                                                               \
      .Attr<int64_t>("sh")                                                                 \
      .Attr<int64_t>("sw")                                                                 \
      .Attr<int64_t>("dh")                                                                 \
      .Attr<int64_t>("dw")                                                                 \
      .Attr<int64_t>("pt")                                                                 \
      .Attr<int64_t>("pb")                                                                 \
      .Attr<int64_t>("pl")                                                                 \
      .Attr<int64_t>("pr")                                                                 \
      .Attr<int64_t>("groups")                                                             \
      .Attr<int64_t>("fpmath")

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxvisionOnednnConvFwd, FwdImpl, JAXVISION_BINDING);
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxvisionOnednnConvDgrad, DgradImpl, JAXVISION_BINDING);
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxvisionOnednnConvWgrad, WgradImpl, JAXVISION_BINDING);

extern "C" int jaxvision_onednn_version() {
  const dnnl_version_t* v = dnnl_version();
  return v->major * 10000 + v->minor * 100 + v->patch;
}
