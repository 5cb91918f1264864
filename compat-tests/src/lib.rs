//! Test hosts made of network namespaces, the compatibility matrix of real applications,
//! and the benchmarks. Nothing here is needed at run time.
