// Tensor: a typed, shaped, row-major view over storage that it keeps alive.
//
// A tensor either owns its memory (Tensor::Empty, 64-byte aligned, freed with the last
// tensor that refers to it) or borrows memory owned by something else that it holds a
// reference to (Tensor::Borrow, e.g. a memory-mapped safetensors file). Slices and
// reshapes are views that share the storage. Copying a Tensor copies the view, not data.
//
//   Tensor x = Tensor::Empty(DType::kF32, {tokens, hidden});   // x is [T, D] f32
//   float* row = x.Row<float>(t);
//   Tensor expert = gate_up.Slice(e, e + 1).Reshape({2 * inter, hidden});
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "runtime/dtype.h"

namespace moe {

using Shape = std::vector<int64_t>;
std::string ShapeString(const Shape& shape);  // "[2, 64]"
int64_t NumElements(const Shape& shape);

class Tensor {
 public:
  Tensor() = default;

  // Uninitialized, owning.
  static Tensor Empty(DType dtype, Shape shape);
  static Tensor Zeros(DType dtype, Shape shape);
  // A view of `data`, which stays valid as long as `keep_alive` does.
  static Tensor Borrow(std::shared_ptr<const void> keep_alive, const void* data, DType dtype,
                       Shape shape);

  bool defined() const { return storage_ != nullptr; }
  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  int rank() const { return static_cast<int>(shape_.size()); }
  int64_t dim(int i) const { return shape_[i < 0 ? i + rank() : i]; }
  int64_t numel() const { return NumElements(shape_); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * DTypeSize(dtype_); }

  void* raw() { return data_; }
  const void* raw() const { return data_; }
  template <typename T>
  T* data() {
    return static_cast<T*>(data_);
  }
  template <typename T>
  const T* data() const {
    return static_cast<const T*>(data_);
  }
  // Row `i` along the first dimension.
  template <typename T>
  T* Row(int64_t i) {
    return data<T>() + i * RowElements();
  }
  template <typename T>
  const T* Row(int64_t i) const {
    return data<T>() + i * RowElements();
  }
  int64_t RowElements() const {  // product of all dimensions but the first
    int64_t n = 1;
    for (size_t i = 1; i < shape_.size(); ++i) n *= shape_[i];
    return n;
  }

  // Rows [begin, end) of the first dimension, sharing storage.
  Tensor Slice(int64_t begin, int64_t end) const;
  // Same elements, another shape (numel must match).
  Tensor Reshape(Shape shape) const;
  // A deep copy converted to `dtype` (floating types only).
  Tensor To(DType dtype) const;
  void Fill(float value);  // f32 tensors only

 private:
  std::shared_ptr<const void> storage_;
  void* data_ = nullptr;
  DType dtype_ = DType::kF32;
  Shape shape_;
};

}  // namespace moe
