// Entry of the SIMD build (build/core.simd.wasm): the same exports as index.ts. The concern files
// pick their v128 kernels (XXH3 long loop, zero/diff tests, BAT byte swap) on ASC_FEATURE_SIMD,
// so this entry only insists that the target really enables SIMD.

// @ts-ignore: compile-time check, ERROR is an AssemblyScript builtin
if (!ASC_FEATURE_SIMD) ERROR('index.simd.ts must be compiled with --enable simd');

export * from './index';
