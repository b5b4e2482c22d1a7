/* Reports, for each lookup a CUDA program or runtime makes, which library and symbol the
 * returned address belongs to (dladdr), as one JSON object: "lookup": "library:symbol". */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

typedef int (*GetProcAddress)(const char *, void **, int, uint64_t, int *);
typedef int (*GetProcAddressV1)(const char *, void **, int, uint64_t);

static int first = 1;

static void report(const char *what, void *address) {
    Dl_info info;
    const char *lib = "null", *sym = "null";
    if (address && dladdr(address, &info)) {
        lib = info.dli_fname ? strrchr(info.dli_fname, '/') ? strrchr(info.dli_fname, '/') + 1 : info.dli_fname : "?";
        sym = info.dli_sname ? info.dli_sname : "?";
    }
    printf("%s\"%s\":\"%s:%s\"", first ? "{" : ",", what, lib, sym);
    first = 0;
}

int main(void) {
    void *cuda = dlopen("libcuda.so.1", RTLD_NOW);
    void *nvml = dlopen("libnvidia-ml.so.1", RTLD_NOW);
    if (!cuda || !nvml) return 4;
    report("handle:cuMemAlloc_v2", dlsym(cuda, "cuMemAlloc_v2"));
    report("handle:cuStreamCreate", dlsym(cuda, "cuStreamCreate"));
    report("handle:cuNoSuchThing", dlsym(cuda, "cuNoSuchThing"));
    report("handle:nvmlDeviceGetMemoryInfo", dlsym(nvml, "nvmlDeviceGetMemoryInfo"));
    report("handle:nvmlDeviceGetCount_v2", dlsym(nvml, "nvmlDeviceGetCount_v2"));
    report("default:cuMemAlloc_v2", dlsym(RTLD_DEFAULT, "cuMemAlloc_v2"));
    report("next:cuMemAlloc_v2", dlsym(RTLD_NEXT, "cuMemAlloc_v2"));
    report("next:malloc", dlsym(RTLD_NEXT, "malloc"));

    GetProcAddress get_proc = (GetProcAddress)dlsym(cuda, "cuGetProcAddress_v2");
    GetProcAddressV1 get_proc_v1 = (GetProcAddressV1)dlsym(cuda, "cuGetProcAddress");
    report("handle:cuGetProcAddress_v2", (void *)get_proc);
    int (*init)(unsigned) = (int (*)(unsigned))dlsym(cuda, "cuInit");
    if (!get_proc || !get_proc_v1 || !init || init(0)) return 5;
    struct { const char *name; int version; uint64_t flags; } asks[] = {
        {"cuMemAlloc", 12080, 0},
        {"cuMemGetInfo", 3010, 0},
        {"cuMemGetInfo", 12080, 0},
        {"cuLaunchKernel", 12080, 0},
        {"cuLaunchKernel", 12080, 2},
        {"cuMemAllocAsync", 12080, 2},
        {"cuGraphLaunch", 12080, 2},
        {"cuCtxCreate", 11000, 0},
        {"cuCtxCreate", 12080, 0},
        {"cuStreamCreate", 12080, 0},
        {"cuGetProcAddress", 12080, 0},
        {"cuGetProcAddress", 11080, 0},
    };
    for (size_t i = 0; i < sizeof asks / sizeof asks[0]; i++) {
        void *fn = NULL;
        int status = 0;
        char what[96];
        snprintf(what, sizeof what, "proc:%s@%d/%llu", asks[i].name, asks[i].version,
                 (unsigned long long)asks[i].flags);
        if (get_proc(asks[i].name, &fn, asks[i].version, asks[i].flags, &status)) fn = NULL;
        report(what, fn);
    }
    void *fn = NULL;
    if (get_proc_v1("cuMemFree", &fn, 12080, 0)) fn = NULL;
    report("proc_v1:cuMemFree@12080/0", fn);
    printf("}\n");
    return 0;
}
