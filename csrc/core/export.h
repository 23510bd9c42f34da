// TORCHSHARD_API marks what torchshard._C exports to other extension modules
// of this package (the benchmark probes, torchshard._bench, link against it;
// see CMakeLists.txt). Everything else is hidden (-fvisibility=hidden), so our
// Abseil and xxHash instantiations never interpose on another library's.
#pragma once

#define TORCHSHARD_API __attribute__((visibility("default")))
