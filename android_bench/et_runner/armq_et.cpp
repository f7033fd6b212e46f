// armq's ExecuTorch runner library for aarch64 devices and QEMU: a C ABI over the
// runtime API that the executorch wheel's libexecutorch.so exports (FileDataLoader,
// Program::load, Method::execute). runner.py loads it with ctypes (--et-lib), so the
// benchmark protocol (inputs, markers around each inference, statistics, JSON) stays in
// one place and the counted region is the same `be.run(x)` call as for every runtime.
// Built by android_bench/qemu_etrunner.py; no torch anywhere.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <vector>

#include <executorch/extension/data_loader/file_data_loader.h>
#include <executorch/extension/memory_allocator/malloc_memory_allocator.h>
#include <executorch/runtime/executor/method.h>
#include <executorch/runtime/executor/program.h>
#include <executorch/runtime/platform/runtime.h>

namespace rt = executorch::runtime;
using executorch::extension::FileDataLoader;
using executorch::extension::MallocMemoryAllocator;

// The wheel ships libexecutorch_threadpool.so without threadpool.h: the two symbols we
// call, declared as the library exports them.
namespace executorch::extension::threadpool {
class ThreadPool {
 public:
  bool _unsafe_reset_threadpool(uint32_t num_threads);
};
ThreadPool* get_threadpool();
}  // namespace executorch::extension::threadpool

namespace {
struct Runner {
  std::unique_ptr<FileDataLoader> loader;
  std::unique_ptr<rt::Program> program;
  std::vector<std::vector<uint8_t>> buffers;
  std::vector<rt::Span<uint8_t>> spans;
  std::unique_ptr<rt::HierarchicalAllocator> planned;
  MallocMemoryAllocator method_alloc, temp_alloc;
  std::unique_ptr<rt::MemoryManager> memory;
  std::unique_ptr<rt::Method> method;
  std::vector<int32_t> in_sizes;
  std::vector<uint8_t> in_dim_order;
};

// Writes `what` (and the runtime's error code, if any) into `err`: the caller's one line.
void say(char* err, size_t n, const char* what, rt::Error e = rt::Error::Ok) {
  if (e == rt::Error::Ok) {
    std::snprintf(err, n, "%s", what);
  } else {
    std::snprintf(err, n, "%s (executorch error 0x%x)", what, static_cast<unsigned>(e));
  }
}
}  // namespace

extern "C" {

// Loads `path`'s "forward" with XNNPACK at `threads` threads; nullptr and `err` on failure.
void* armq_et_open(const char* path, int threads, char* err, size_t errlen) {
  rt::runtime_init();
  if (auto* pool = executorch::extension::threadpool::get_threadpool()) {
    pool->_unsafe_reset_threadpool(static_cast<uint32_t>(threads));
  }
  auto r = std::make_unique<Runner>();
  auto loader = FileDataLoader::from(path);
  if (!loader.ok()) {
    say(err, errlen, "cannot open the program", loader.error());
    return nullptr;
  }
  r->loader = std::make_unique<FileDataLoader>(std::move(loader.get()));
  auto program = rt::Program::load(r->loader.get());
  if (!program.ok()) {
    say(err, errlen, "not an ExecuTorch program", program.error());
    return nullptr;
  }
  r->program = std::make_unique<rt::Program>(std::move(program.get()));
  auto meta = r->program->method_meta("forward");
  if (!meta.ok()) {
    say(err, errlen, "the program has no forward method", meta.error());
    return nullptr;
  }
  for (size_t i = 0; i < meta->num_memory_planned_buffers(); ++i) {
    r->buffers.emplace_back(static_cast<size_t>(meta->memory_planned_buffer_size(i).get()));
  }
  for (auto& b : r->buffers) r->spans.emplace_back(b.data(), b.size());
  r->planned = std::make_unique<rt::HierarchicalAllocator>(
      rt::Span<rt::Span<uint8_t>>(r->spans.data(), r->spans.size()));
  r->memory = std::make_unique<rt::MemoryManager>(&r->method_alloc, r->planned.get(), &r->temp_alloc);
  auto method = r->program->load_method("forward", r->memory.get());
  if (!method.ok()) {
    say(err, errlen, "cannot load forward (an operator or delegate this runtime lacks?)",
        method.error());
    return nullptr;
  }
  r->method = std::make_unique<rt::Method>(std::move(method.get()));
  if (meta->num_inputs() != 1 || meta->input_tag(0).get() != rt::Tag::Tensor) {
    say(err, errlen, "the runner feeds exactly one tensor input");
    return nullptr;
  }
  auto in = meta->input_tensor_meta(0).get();
  if (in.scalar_type() != executorch::aten::ScalarType::Float) {
    say(err, errlen, "the program's input is not float32");
    return nullptr;
  }
  r->in_sizes.assign(in.sizes().begin(), in.sizes().end());
  r->in_dim_order.assign(in.dim_order().begin(), in.dim_order().end());
  return r.release();
}

// Shape of input (`output` = 0) or output `index`; dims written to `dims`; the rank or -1.
int armq_et_shape(void* h, int output, int index, int64_t* dims, int max_dims) {
  auto* r = static_cast<Runner*>(h);
  auto meta = r->program->method_meta("forward");
  auto info = output ? meta->output_tensor_meta(index) : meta->input_tensor_meta(index);
  if (!info.ok() || static_cast<int>(info->sizes().size()) > max_dims) return -1;
  for (size_t i = 0; i < info->sizes().size(); ++i) dims[i] = info->sizes()[i];
  return static_cast<int>(info->sizes().size());
}

int armq_et_num_outputs(void* h) {
  return static_cast<int>(static_cast<Runner*>(h)->method->outputs_size());
}

// 1 when the input's dim order is the identity (NCHW-contiguous), as armq exports it.
int armq_et_input_contiguous(void* h) {
  auto& d = static_cast<Runner*>(h)->in_dim_order;
  for (size_t i = 0; i < d.size(); ++i) if (d[i] != i) return 0;
  return 1;
}

// One inference: `x` (the input's element count, float32) in, output `k` copied to `outs[k]`
// (`out_counts[k]` floats each). 0 ok, -1 and `err` on failure.
int armq_et_run(void* h, float* x, float** outs, const int64_t* out_counts, int n_out,
                char* err, size_t errlen) {
  auto* r = static_cast<Runner*>(h);
  executorch::aten::TensorImpl impl(executorch::aten::ScalarType::Float,
                                    static_cast<ssize_t>(r->in_sizes.size()), r->in_sizes.data(),
                                    x, r->in_dim_order.data());
  rt::Error e = r->method->set_input(rt::EValue(executorch::aten::Tensor(&impl)), 0);
  if (e != rt::Error::Ok) {
    say(err, errlen, "set_input failed", e);
    return -1;
  }
  e = r->method->execute();
  if (e != rt::Error::Ok) {
    say(err, errlen, "execute failed", e);
    return -1;
  }
  for (int k = 0; k < n_out; ++k) {
    const rt::EValue& v = r->method->get_output(k);
    if (!v.isTensor() || v.toTensor().numel() != out_counts[k] ||
        v.toTensor().scalar_type() != executorch::aten::ScalarType::Float) {
      say(err, errlen, "an output is not a float32 tensor of its planned size");
      return -1;
    }
    std::memcpy(outs[k], v.toTensor().const_data_ptr<float>(), sizeof(float) * out_counts[k]);
  }
  return 0;
}

void armq_et_close(void* h) { delete static_cast<Runner*>(h); }

}  // extern "C"
