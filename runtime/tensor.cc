#include "runtime/tensor.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include <sys/mman.h>

#include "runtime/check.h"
#include "absl/strings/str_join.h"

namespace moe {

std::string ShapeString(const Shape& shape) {
  return "[" + absl::StrJoin(shape, ", ") + "]";
}

int64_t NumElements(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

Tensor Tensor::Empty(DType dtype, Shape shape) {
  Tensor t;
  t.dtype_ = dtype;
  t.shape_ = std::move(shape);
  // Buffers of a huge page or more (weights, KV caches) ask for transparent huge pages, so
  // that streaming a weight does not miss the TLB every 4 KiB. Where the kernel grants none
  // (this project's CI sandbox reports AnonHugePages 0 even so), they are 4 KiB pages.
  constexpr size_t kHugePage = size_t{2} << 20;
  const bool huge = t.nbytes() >= kHugePage;
  const size_t align = huge ? kHugePage : 64;
  const size_t bytes = std::max<size_t>(64, (t.nbytes() + align - 1) / align * align);
  void* p = std::aligned_alloc(align, bytes);
  CHECK(p != nullptr) << "out of memory allocating " << bytes << " bytes";
  if (huge) madvise(p, bytes, MADV_HUGEPAGE);  // advice only: without THP it is 4 KiB pages
  t.storage_ = std::shared_ptr<const void>(p, [](const void* q) { std::free(const_cast<void*>(q)); });
  t.data_ = p;
  return t;
}

Tensor Tensor::Zeros(DType dtype, Shape shape) {
  Tensor t = Empty(dtype, std::move(shape));
  std::memset(t.data_, 0, t.nbytes());
  return t;
}

Tensor Tensor::Borrow(std::shared_ptr<const void> keep_alive, const void* data, DType dtype,
                      Shape shape) {
  Tensor t;
  t.storage_ = std::move(keep_alive);
  t.data_ = const_cast<void*>(data);
  t.dtype_ = dtype;
  t.shape_ = std::move(shape);
  return t;
}

Tensor Tensor::Slice(int64_t begin, int64_t end) const {
  CHECK(rank() >= 1 && 0 <= begin && begin <= end && end <= shape_[0])
      << "slice [" << begin << ", " << end << ") of " << ShapeString(shape_);
  Tensor t = *this;
  t.shape_[0] = end - begin;
  t.data_ = static_cast<std::byte*>(data_) + begin * RowElements() * DTypeSize(dtype_);
  return t;
}

Tensor Tensor::Reshape(Shape shape) const {
  CHECK_EQ(NumElements(shape), numel())
      << "reshape " << ShapeString(shape_) << " to " << ShapeString(shape);
  Tensor t = *this;
  t.shape_ = std::move(shape);
  return t;
}

Tensor Tensor::To(DType dtype) const {
  Tensor out = Empty(dtype, shape_);
  if (dtype == dtype_) {
    std::memcpy(out.data_, data_, nbytes());
  } else if (dtype == DType::kF32) {
    ConvertToFloat(dtype_, data_, out.data<float>(), numel());
  } else {
    Tensor f32 = To(DType::kF32);
    ConvertFromFloat(f32.data<float>(), dtype, out.data_, numel());
  }
  return out;
}

void Tensor::Fill(float value) {
  CHECK(dtype_ == DType::kF32);
  std::fill_n(data<float>(), numel(), value);
}

}  // namespace moe
