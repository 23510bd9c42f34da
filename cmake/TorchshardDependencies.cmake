# Resolves torchshard's dependencies into imported targets:
#   torchshard::torch   torch/c10 headers and libraries of the installed torch (paths from setup.py)
#   torchshard::python  Python headers for an extension module (never libpython itself)
#   torchshard::absl    absl::flat_hash_map from the system (Debian libabsl-dev)
#   torchshard::xxhash  header-only XXH3 from the system (Debian libxxhash-dev)
# Third-party headers are SYSTEM includes so -Werror applies to our code only.

foreach(required TORCHSHARD_TORCH_VERSION TORCHSHARD_TORCH_INCLUDE_DIRS
                 TORCHSHARD_TORCH_LIBRARY_DIRS TORCHSHARD_CXX11_ABI
                 TORCHSHARD_OUTPUT_DIR TORCHSHARD_EXTENSION_SUFFIX)
  if(NOT DEFINED ${required})
    message(FATAL_ERROR "${required} is unset: build torchshard through setup.py "
                        "(pip install --no-build-isolation .)")
  endif()
endforeach()

find_package(Python REQUIRED COMPONENTS Interpreter Development.Module)

# Not find_package(Torch): its config insists on CUDA when torch was built with it.
add_library(torchshard::torch INTERFACE IMPORTED)
target_include_directories(torchshard::torch SYSTEM INTERFACE ${TORCHSHARD_TORCH_INCLUDE_DIRS})
target_link_directories(torchshard::torch INTERFACE ${TORCHSHARD_TORCH_LIBRARY_DIRS})
target_link_libraries(torchshard::torch INTERFACE torch torch_cpu c10 torch_python)
# Must match torch's std::string/std::list ABI, and pybind11 must see itself as
# part of a torch extension so it shares torch's pybind11 internals.
target_compile_definitions(torchshard::torch INTERFACE
  _GLIBCXX_USE_CXX11_ABI=${TORCHSHARD_CXX11_ABI}
  TORCH_API_INCLUDE_EXTENSION_H
  TORCH_EXTENSION_NAME=_C)

add_library(torchshard::python INTERFACE IMPORTED)
target_include_directories(torchshard::python SYSTEM INTERFACE ${Python_INCLUDE_DIRS})

find_package(absl CONFIG REQUIRED)
add_library(torchshard::absl INTERFACE IMPORTED)
target_link_libraries(torchshard::absl INTERFACE absl::flat_hash_map absl::flat_hash_set absl::hash)
# Debian's absl is built with the same ABI flag torch uses (the C++11 one).
target_compile_definitions(torchshard::absl INTERFACE _GLIBCXX_USE_CXX11_ABI=${TORCHSHARD_CXX11_ABI})

find_package(PkgConfig REQUIRED)
pkg_check_modules(XXHASH REQUIRED IMPORTED_TARGET libxxhash)
set(TORCHSHARD_XXHASH_VERSION "${XXHASH_VERSION}")
set(TORCHSHARD_XXHASH_INCLUDE_DIR "${XXHASH_INCLUDEDIR}")
add_library(torchshard::xxhash INTERFACE IMPORTED)
target_include_directories(torchshard::xxhash SYSTEM INTERFACE ${XXHASH_INCLUDE_DIRS} ${XXHASH_INCLUDEDIR})
# Header-only: XXH3 inlines into the key hasher; no libxxhash.so at run time.
target_compile_definitions(torchshard::xxhash INTERFACE XXH_INLINE_ALL)

# A Python extension module: no libpython link, -fPIC, module init exported.
# Built as a SHARED library (to Python the same file as a MODULE one) because
# CMake lets other targets link only against shared ones: _bench links _C.
function(torchshard_add_python_module name)
  add_library(${name} SHARED ${ARGN})
endfunction()

# TORCHSHARD_SANITIZE=address,undefined builds an instrumented module (docs/reliability.md).
function(torchshard_apply_sanitizers target)
  if(TORCHSHARD_SANITIZE)
    # GCC 12's -Wmaybe-uninitialized reports false positives in instrumented code
    # (std::variant moves in result_planner.cpp), which -Werror would turn into a
    # failed build; the normal build keeps the warning.
    target_compile_options(${target} PRIVATE -fsanitize=${TORCHSHARD_SANITIZE} -fno-omit-frame-pointer
                           -Wno-maybe-uninitialized)
    target_link_options(${target} PRIVATE -fsanitize=${TORCHSHARD_SANITIZE})
  endif()
endfunction()
