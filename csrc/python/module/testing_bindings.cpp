#include "csrc/python/module/testing_bindings.h"

#include "csrc/python/hit/all_reduce.h"
#include "csrc/python/hit/collective_output.h"

#include <torch/csrc/autograd/python_variable.h>

#include <string>

namespace torchshard {

void init_testing_bindings(py::module_& module) {
  module.def("native_all_reduce_for_testing",
             [](const at::Tensor& local, const std::string& reduce_op, const std::string& group_name) {
               return run_native_all_reduce(NativeAllReduce{reduce_op, group_name}, local);
             },
             py::arg("local"), py::arg("reduce_op"), py::arg("group_name"),
             "The all-reduce a hit runs for a planned Partial -> Replicate.");
  module.def("local_safe_to_drop_for_testing",
             [](py::object redistributed, py::object input_local) {
               if (!THPVariable_Check(redistributed.ptr()) || !THPVariable_Check(input_local.ptr())) {
                 throw py::type_error("expected two tensors");
               }
               return local_safe_to_drop(std::move(redistributed), input_local.ptr());
             },
             py::arg("redistributed"), py::arg("input_local"),
             "The tensor a hit's local op takes for a redistributed local.");
  module.def("release_let_go_outputs_for_testing", &release_let_go_outputs,
             "Drop the kept collective outputs nothing else references any more.");
  module.def("kept_collective_outputs_for_testing", &kept_collective_outputs,
             "How many collective outputs are kept until their backend lets go.");
}

} // namespace torchshard
