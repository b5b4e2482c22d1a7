/*
 * runtime_like: a test program that talks to the CUDA driver the way the CUDA runtime does.
 *
 * It dlopens libcuda.so.1, looks up only cuGetProcAddress_v2 with dlsym, and fetches every
 * other entry point through it by base name with cudaVersion 12000 and flags 0 (or 2, the
 * per-thread default stream, with --ptsz). It runs unchanged on a real GPU and on the
 * simulated device, and prints one JSON object per run.
 *
 *   runtime_like info
 *   runtime_like fill-until-oom [--path plain|pitch|managed|async|pool|vmm|array] [--step BYTES]
 *   runtime_like hold --bytes BYTES --seconds S [--leak]
 *   runtime_like spin --ptx FILE --kernel-us N --seconds S
 *   runtime_like resolve SYMBOL            (prints the status cuGetProcAddress_v2 reports)
 *   runtime_like call-cost --ptx FILE [--count N]
 *                                          (ns per cuLaunchKernel of an empty hami_spin,
 *                                           cuMemAlloc+cuMemFree pair, cuMemGetInfo; median of 7)
 *
 * Common options: --device N, --ptsz. Exit status 0 when the run did what it says.
 */
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef int CUresult;
typedef int CUdevice;
typedef uint64_t CUdeviceptr;
typedef void *CUcontext, *CUstream, *CUmodule, *CUfunction, *CUmemoryPool, *CUarray;
typedef uint64_t CUmemGenericAllocationHandle;

typedef struct { int type; int id; } CUmemLocation;
typedef struct {
    int type;
    int requestedHandleTypes;
    CUmemLocation location;
    void *win32HandleMetaData;
    struct { unsigned char compressionType, gpuDirectRDMACapable; unsigned short usage; unsigned char reserved[4]; } allocFlags;
} CUmemAllocationProp;
typedef struct { CUmemLocation location; int flags; } CUmemAccessDesc;
typedef struct {
    int allocType;
    int handleTypes;
    CUmemLocation location;
    void *win32SecurityAttributes;
    size_t maxSize;
    unsigned short usage;
    unsigned char reserved[54];
} CUmemPoolProps;
typedef struct { size_t Width, Height; unsigned int Format, NumChannels; } CUDA_ARRAY_DESCRIPTOR;

typedef CUresult (*GetProcAddress)(const char *, void **, int, uint64_t, int *);

static GetProcAddress get_proc;
static uint64_t proc_flags = 0;

static void *entry(const char *name) {
    void *fn = NULL;
    int status = -1;
    CUresult rc = get_proc(name, &fn, 12000, proc_flags, &status);
    if (rc != 0 || fn == NULL) {
        printf("{\"error\":\"cuGetProcAddress_v2(%s) failed\",\"code\":%d,\"status\":%d}\n", name, rc, status);
        exit(3);
    }
    return fn;
}

#define FN(name, type, ...) typedef CUresult (*type)(__VA_ARGS__); static type name;
FN(p_cuInit, T_cuInit, unsigned)
FN(p_cuDeviceGet, T_cuDeviceGet, CUdevice *, int)
FN(p_cuDeviceGetCount, T_cuDeviceGetCount, int *)
FN(p_cuDeviceGetName, T_cuDeviceGetName, char *, int, CUdevice)
FN(p_cuDeviceTotalMem, T_cuDeviceTotalMem, size_t *, CUdevice)
FN(p_cuDevicePrimaryCtxRetain, T_cuDevicePrimaryCtxRetain, CUcontext *, CUdevice)
FN(p_cuDevicePrimaryCtxRelease, T_cuDevicePrimaryCtxRelease, CUdevice)
FN(p_cuCtxSetCurrent, T_cuCtxSetCurrent, CUcontext)
FN(p_cuCtxSynchronize, T_cuCtxSynchronize, void)
FN(p_cuMemGetInfo, T_cuMemGetInfo, size_t *, size_t *)
FN(p_cuMemAlloc, T_cuMemAlloc, CUdeviceptr *, size_t)
FN(p_cuMemFree, T_cuMemFree, CUdeviceptr)
FN(p_cuMemAllocPitch, T_cuMemAllocPitch, CUdeviceptr *, size_t *, size_t, size_t, unsigned)
FN(p_cuMemAllocManaged, T_cuMemAllocManaged, CUdeviceptr *, size_t, unsigned)
FN(p_cuMemAllocAsync, T_cuMemAllocAsync, CUdeviceptr *, size_t, CUstream)
FN(p_cuMemFreeAsync, T_cuMemFreeAsync, CUdeviceptr, CUstream)
FN(p_cuMemPoolCreate, T_cuMemPoolCreate, CUmemoryPool *, const CUmemPoolProps *)
FN(p_cuMemPoolDestroy, T_cuMemPoolDestroy, CUmemoryPool)
FN(p_cuMemAllocFromPoolAsync, T_cuMemAllocFromPoolAsync, CUdeviceptr *, size_t, CUmemoryPool, CUstream)
FN(p_cuMemCreate, T_cuMemCreate, CUmemGenericAllocationHandle *, size_t, const CUmemAllocationProp *, uint64_t)
FN(p_cuMemRelease, T_cuMemRelease, CUmemGenericAllocationHandle)
FN(p_cuMemAddressReserve, T_cuMemAddressReserve, CUdeviceptr *, size_t, size_t, CUdeviceptr, uint64_t)
FN(p_cuMemAddressFree, T_cuMemAddressFree, CUdeviceptr, size_t)
FN(p_cuMemMap, T_cuMemMap, CUdeviceptr, size_t, size_t, CUmemGenericAllocationHandle, uint64_t)
FN(p_cuMemUnmap, T_cuMemUnmap, CUdeviceptr, size_t)
FN(p_cuMemSetAccess, T_cuMemSetAccess, CUdeviceptr, size_t, const CUmemAccessDesc *, size_t)
FN(p_cuMemGetAllocationGranularity, T_cuMemGetAllocationGranularity, size_t *, const CUmemAllocationProp *, int)
FN(p_cuArrayCreate, T_cuArrayCreate, CUarray *, const CUDA_ARRAY_DESCRIPTOR *)
FN(p_cuArrayDestroy, T_cuArrayDestroy, CUarray)
FN(p_cuStreamCreate, T_cuStreamCreate, CUstream *, unsigned)
FN(p_cuStreamSynchronize, T_cuStreamSynchronize, CUstream)
FN(p_cuStreamDestroy, T_cuStreamDestroy, CUstream)
FN(p_cuModuleLoadData, T_cuModuleLoadData, CUmodule *, const void *)
FN(p_cuModuleGetFunction, T_cuModuleGetFunction, CUfunction *, CUmodule, const char *)
FN(p_cuLaunchKernel, T_cuLaunchKernel, CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
   unsigned, CUstream, void **, void **)

#define LOAD(name) p_##name = (T_##name)entry(#name)

#define CHECK(call)                                                                        \
    do {                                                                                   \
        CUresult rc_ = (call);                                                             \
        if (rc_ != 0) {                                                                    \
            printf("{\"error\":\"%s\",\"code\":%d}\n", #call, rc_);                        \
            exit(4);                                                                       \
        }                                                                                  \
    } while (0)

static void load_all(void) {
    void *lib = dlopen("libcuda.so.1", RTLD_NOW);
    if (!lib) {
        printf("{\"error\":\"dlopen libcuda.so.1: %s\"}\n", dlerror());
        exit(2);
    }
    get_proc = (GetProcAddress)dlsym(lib, "cuGetProcAddress_v2");
    if (!get_proc) {
        printf("{\"error\":\"no cuGetProcAddress_v2\"}\n");
        exit(2);
    }
    LOAD(cuInit); LOAD(cuDeviceGet); LOAD(cuDeviceGetCount); LOAD(cuDeviceGetName);
    LOAD(cuDeviceTotalMem); LOAD(cuDevicePrimaryCtxRetain); LOAD(cuDevicePrimaryCtxRelease);
    LOAD(cuCtxSetCurrent); LOAD(cuCtxSynchronize); LOAD(cuMemGetInfo); LOAD(cuMemAlloc);
    LOAD(cuMemFree); LOAD(cuMemAllocPitch); LOAD(cuMemAllocManaged); LOAD(cuMemAllocAsync);
    LOAD(cuMemFreeAsync); LOAD(cuMemPoolCreate); LOAD(cuMemPoolDestroy);
    LOAD(cuMemAllocFromPoolAsync); LOAD(cuMemCreate); LOAD(cuMemRelease);
    LOAD(cuMemAddressReserve); LOAD(cuMemAddressFree); LOAD(cuMemMap); LOAD(cuMemUnmap);
    LOAD(cuMemSetAccess); LOAD(cuMemGetAllocationGranularity); LOAD(cuArrayCreate);
    LOAD(cuArrayDestroy); LOAD(cuStreamCreate); LOAD(cuStreamSynchronize); LOAD(cuStreamDestroy);
    LOAD(cuModuleLoadData); LOAD(cuModuleGetFunction); LOAD(cuLaunchKernel);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static const char *arg(int argc, char **argv, const char *name, const char *fallback) {
    for (int i = 2; i + 1 < argc; i++)
        if (strcmp(argv[i], name) == 0) return argv[i + 1];
    return fallback;
}

static int flag(int argc, char **argv, const char *name) {
    for (int i = 2; i < argc; i++)
        if (strcmp(argv[i], name) == 0) return 1;
    return 0;
}

static int device_ordinal;
static CUdevice device;

static void open_device(void) {
    CHECK(p_cuInit(0));
    CHECK(p_cuDeviceGet(&device, device_ordinal));
    CUcontext ctx;
    CHECK(p_cuDevicePrimaryCtxRetain(&ctx, device));
    CHECK(p_cuCtxSetCurrent(ctx));
}

/* One allocation of `step` bytes through `path`; returns the driver's result. */
#define MAX_ALLOCS 65536
static CUdeviceptr ptrs[MAX_ALLOCS];
static CUmemGenericAllocationHandle handles[MAX_ALLOCS];
static size_t sizes[MAX_ALLOCS];
static CUarray arrays[MAX_ALLOCS];
static CUmemoryPool pool;
static CUstream stream;

static CUmemAllocationProp vmm_prop(void) {
    CUmemAllocationProp prop;
    memset(&prop, 0, sizeof prop);
    prop.type = 1;          /* CU_MEM_ALLOCATION_TYPE_PINNED */
    prop.location.type = 1; /* CU_MEM_LOCATION_TYPE_DEVICE */
    prop.location.id = device;
    return prop;
}

static CUresult allocate(const char *path, int n, size_t step) {
    sizes[n] = step;
    if (strcmp(path, "plain") == 0) return p_cuMemAlloc(&ptrs[n], step);
    if (strcmp(path, "pitch") == 0) {
        size_t pitch = 0, width = 4096;
        return p_cuMemAllocPitch(&ptrs[n], &pitch, width, step / width, 4);
    }
    if (strcmp(path, "managed") == 0) return p_cuMemAllocManaged(&ptrs[n], step, 1);
    if (strcmp(path, "async") == 0) {
        CUresult rc = p_cuMemAllocAsync(&ptrs[n], step, stream);
        return rc ? rc : p_cuStreamSynchronize(stream);
    }
    if (strcmp(path, "pool") == 0) {
        CUresult rc = p_cuMemAllocFromPoolAsync(&ptrs[n], step, pool, stream);
        return rc ? rc : p_cuStreamSynchronize(stream);
    }
    if (strcmp(path, "vmm") == 0) {
        CUmemAllocationProp prop = vmm_prop();
        CUresult rc = p_cuMemCreate(&handles[n], step, &prop, 0);
        if (rc) return rc;
        CHECK(p_cuMemAddressReserve(&ptrs[n], step, 0, 0, 0));
        CHECK(p_cuMemMap(ptrs[n], step, 0, handles[n], 0));
        CUmemAccessDesc access = {{1, device}, 3};
        CHECK(p_cuMemSetAccess(ptrs[n], step, &access, 1));
        return 0;
    }
    if (strcmp(path, "array") == 0) {
        CUDA_ARRAY_DESCRIPTOR desc = {4096, step / (4096 * 4), 0x20 /* FLOAT */, 1};
        return p_cuArrayCreate(&arrays[n], &desc);
    }
    printf("{\"error\":\"unknown path %s\"}\n", path);
    exit(64);
}

static void release(const char *path, int n) {
    if (strcmp(path, "vmm") == 0) {
        CHECK(p_cuMemUnmap(ptrs[n], sizes[n]));
        CHECK(p_cuMemAddressFree(ptrs[n], sizes[n]));
        CHECK(p_cuMemRelease(handles[n]));
    } else if (strcmp(path, "array") == 0) {
        CHECK(p_cuArrayDestroy(arrays[n]));
    } else if (strcmp(path, "async") == 0 || strcmp(path, "pool") == 0) {
        CHECK(p_cuMemFreeAsync(ptrs[n], stream));
    } else {
        CHECK(p_cuMemFree(ptrs[n]));
    }
}

static int fill_until_oom(int argc, char **argv) {
    const char *path = arg(argc, argv, "--path", "plain");
    size_t step = strtoull(arg(argc, argv, "--step", "67108864"), NULL, 10);
    open_device();
    CHECK(p_cuStreamCreate(&stream, 1));
    if (strcmp(path, "pool") == 0) {
        CUmemPoolProps props;
        memset(&props, 0, sizeof props);
        props.allocType = 1;
        props.location.type = 1;
        props.location.id = device;
        CHECK(p_cuMemPoolCreate(&pool, &props));
    }
    if (strcmp(path, "vmm") == 0) {
        size_t granularity = 0;
        CUmemAllocationProp prop = vmm_prop();
        CHECK(p_cuMemGetAllocationGranularity(&granularity, &prop, 0));
        step = (step + granularity - 1) / granularity * granularity;
    }
    size_t free_before = 0, total = 0;
    CHECK(p_cuMemGetInfo(&free_before, &total));
    int n = 0;
    CUresult rc = 0;
    while (n < MAX_ALLOCS && (rc = allocate(path, n, step)) == 0) n++;
    size_t free_at_oom = 0;
    CHECK(p_cuMemGetInfo(&free_at_oom, &total));
    for (int i = 0; i < n; i++) release(path, i);
    CHECK(p_cuCtxSynchronize());
    size_t free_after = 0;
    CHECK(p_cuMemGetInfo(&free_after, &total));
    printf("{\"path\":\"%s\",\"allocated_bytes\":%zu,\"allocations\":%d,\"error_code\":%d,"
           "\"mem_info_total\":%zu,\"mem_info_free\":%zu,\"mem_info_free_before\":%zu,"
           "\"mem_info_free_after_release\":%zu}\n",
           path, (size_t)n * step, n, rc, total, free_at_oom, free_before, free_after);
    return rc == 2 ? 0 : 1;
}

static int hold(int argc, char **argv) {
    size_t bytes = strtoull(arg(argc, argv, "--bytes", "0"), NULL, 10);
    double seconds = atof(arg(argc, argv, "--seconds", "1"));
    open_device();
    CUdeviceptr ptr = 0;
    CUresult rc = bytes ? p_cuMemAlloc(&ptr, bytes) : 0;
    size_t free_mem = 0, total = 0;
    CHECK(p_cuMemGetInfo(&free_mem, &total));
    printf("{\"pid\":%d,\"allocated_bytes\":%zu,\"error_code\":%d,\"mem_info_free\":%zu,\"mem_info_total\":%zu}\n",
           (int)getpid(), rc ? 0 : bytes, rc, free_mem, total);
    fflush(stdout);
    usleep((useconds_t)(seconds * 1e6));
    /* --leak exits holding the memory, as a program that never frees does. */
    if (!rc && bytes && !flag(argc, argv, "--leak")) CHECK(p_cuMemFree(ptr));
    return rc;
}

static char *read_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = malloc(len + 1);
    if (!text || fread(text, 1, len, f) != (size_t)len) return NULL;
    text[len] = 0;
    fclose(f);
    return text;
}

static int spin(int argc, char **argv) {
    const char *ptx_path = arg(argc, argv, "--ptx", NULL);
    unsigned long long kernel_us = strtoull(arg(argc, argv, "--kernel-us", "1000"), NULL, 10);
    double seconds = atof(arg(argc, argv, "--seconds", "1"));
    char *ptx = ptx_path ? read_file(ptx_path) : NULL;
    if (!ptx) {
        printf("{\"error\":\"spin needs --ptx FILE with hami_spin\"}\n");
        return 64;
    }
    open_device();
    CUmodule module;
    CUfunction kernel;
    CHECK(p_cuModuleLoadData(&module, ptx));
    CHECK(p_cuModuleGetFunction(&kernel, module, "hami_spin"));
    CHECK(p_cuStreamCreate(&stream, 1));
    uint64_t ns = kernel_us * 1000ull;
    void *params[] = {&ns};
    unsigned long long launches = 0;
    double start = now_s();
    /* Keep a few kernels queued, as a real training loop does, and count completed ones. */
    while (now_s() - start < seconds) {
        for (int i = 0; i < 4; i++) {
            CHECK(p_cuLaunchKernel(kernel, 1, 1, 1, 32, 1, 1, 0, stream, params, NULL));
            launches++;
        }
        CHECK(p_cuStreamSynchronize(stream));
    }
    double elapsed = now_s() - start;
    printf("{\"launches\":%llu,\"kernel_us\":%llu,\"elapsed_s\":%.3f,\"pid\":%d}\n", launches, kernel_us,
           elapsed, (int)getpid());
    return 0;
}

static double now_ns(void) { return now_s() * 1e9; }

static int compare_doubles(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median over 7 runs of the cost of one call, in ns. */
#define RUNS 7
static double median(double *runs) {
    qsort(runs, RUNS, sizeof *runs, compare_doubles);
    return runs[RUNS / 2];
}

static int call_cost(int argc, char **argv) {
    const char *ptx_path = arg(argc, argv, "--ptx", NULL);
    long count = atol(arg(argc, argv, "--count", "1000000"));
    char *ptx = ptx_path ? read_file(ptx_path) : NULL;
    if (!ptx || count <= 0) {
        printf("{\"error\":\"call-cost needs --ptx FILE and a positive --count\"}\n");
        return 64;
    }
    open_device();
    CUmodule module;
    CUfunction kernel;
    CHECK(p_cuModuleLoadData(&module, ptx));
    CHECK(p_cuModuleGetFunction(&kernel, module, "hami_spin"));
    uint64_t zero = 0;
    void *params[] = {&zero};
    double launch[RUNS], alloc_free[RUNS], get_info[RUNS];
    for (int run = 0; run < RUNS; run++) {
        double start = now_ns();
        for (long i = 0; i < count; i++)
            CHECK(p_cuLaunchKernel(kernel, 1, 1, 1, 1, 1, 1, 0, NULL, params, NULL));
        launch[run] = (now_ns() - start) / count;
        CHECK(p_cuCtxSynchronize());
        long pairs = count / 100 + 1;
        start = now_ns();
        for (long i = 0; i < pairs; i++) {
            CUdeviceptr ptr;
            CHECK(p_cuMemAlloc(&ptr, 1 << 20));
            CHECK(p_cuMemFree(ptr));
        }
        alloc_free[run] = (now_ns() - start) / pairs;
        start = now_ns();
        for (long i = 0; i < count; i++) {
            size_t free_mem, total;
            CHECK(p_cuMemGetInfo(&free_mem, &total));
        }
        get_info[run] = (now_ns() - start) / count;
    }
    printf("{\"launch_ns\":%.1f,\"alloc_free_ns\":%.1f,\"mem_get_info_ns\":%.1f,\"runs\":%d,\"count\":%ld}\n",
           median(launch), median(alloc_free), median(get_info), RUNS, count);
    return 0;
}

static int info(void) {
    open_device();
    int count = 0;
    char name[128];
    size_t total = 0, free_mem = 0;
    CHECK(p_cuDeviceGetCount(&count));
    CHECK(p_cuDeviceGetName(name, sizeof name, device));
    CHECK(p_cuDeviceTotalMem(&total, device));
    CHECK(p_cuMemGetInfo(&free_mem, &total));
    printf("{\"devices\":%d,\"name\":\"%s\",\"total\":%zu,\"free\":%zu}\n", count, name, total, free_mem);
    CHECK(p_cuDevicePrimaryCtxRelease(device));
    return 0;
}

static int resolve(int argc, char **argv) {
    if (argc < 3) return 64;
    void *fn = NULL;
    int status = -1;
    CUresult rc = get_proc(argv[2], &fn, 12000, proc_flags, &status);
    printf("{\"symbol\":\"%s\",\"code\":%d,\"status\":%d,\"found\":%s}\n", argv[2], rc, status, fn ? "true" : "false");
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s info|fill-until-oom|hold|spin|resolve|call-cost [options]\n", argv[0]);
        return 64;
    }
    proc_flags = flag(argc, argv, "--ptsz") ? 2 : 0;
    device_ordinal = atoi(arg(argc, argv, "--device", "0"));
    load_all();
    if (strcmp(argv[1], "info") == 0) return info();
    if (strcmp(argv[1], "fill-until-oom") == 0) return fill_until_oom(argc, argv);
    if (strcmp(argv[1], "hold") == 0) return hold(argc, argv);
    if (strcmp(argv[1], "spin") == 0) return spin(argc, argv);
    if (strcmp(argv[1], "resolve") == 0) return resolve(argc, argv);
    if (strcmp(argv[1], "call-cost") == 0) return call_cost(argc, argv);
    fprintf(stderr, "unknown mode %s\n", argv[1]);
    return 64;
}
