/* A CUDA program that behaves like the CUDA runtime: it dlopens libcuda.so.1, takes only
 * cuGetProcAddress_v2 from dlsym, and fetches every other entry point through it (CUDA 12.8,
 * default stream flags). Modes (one JSON line on stdout each):
 *   fill PATH STEP     allocate STEP bytes through PATH until the driver refuses
 *                      (PATH: alloc pitch managed async pool vmm array array3d)
 *   info               memory as CUDA (cuMemGetInfo_v2, cuDeviceTotalMem_v2) and NVML see it
 *   stress SEED OPS MAX random cuMemAlloc_v2/cuMemFree_v2 of 1..MAX bytes, then report the live
 *                      charge and hold the memory until stdin closes
 *   hold BYTES         allocate BYTES, report, hold until stdin closes
 *   fork PARENT CHILD  allocate PARENT bytes, fork; the child allocates CHILD bytes and
 *                      exits without freeing; report both codes, hold until stdin closes
 */
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

typedef int CUresult;
typedef int CUdevice;
typedef uint64_t CUdeviceptr;
typedef void *CUcontext;
typedef void *CUstream;
typedef void *CUarray;
typedef void *CUmemoryPool;
typedef uint64_t CUmemHandle;

typedef struct { int type; int id; } CUmemLocation;
typedef struct {
    int type; int requestedHandleTypes; CUmemLocation location; void *win32; unsigned char flags[8];
} CUmemAllocationProp;
typedef struct {
    int allocType; int handleTypes; CUmemLocation location; void *win32; size_t maxSize;
    unsigned short usage; unsigned char reserved[54];
} CUmemPoolProps;
typedef struct { size_t Width, Height; unsigned Format, NumChannels; } ARRAY_DESC;
typedef struct { size_t Width, Height, Depth; unsigned Format, NumChannels, Flags; } ARRAY3D_DESC;
typedef struct { unsigned long long total, free, used; } nvmlMemory_t;

typedef CUresult (*GetProcAddress)(const char *, void **, int, uint64_t, int *);
static GetProcAddress get_proc;

static void *fetch(const char *name) {
    void *fn = NULL;
    int status = 0;
    CUresult rc = get_proc(name, &fn, 12080, 0, &status);
    if (rc != 0 || fn == NULL) {
        fprintf(stderr, "cuGetProcAddress_v2(%s) = %d\n", name, rc);
        exit(3);
    }
    return fn;
}

#define FETCH(var, ret, args, name) ret (*var) args = (ret (*) args)fetch(name)

static const uint64_t GRANULE = 2u << 20;
static uint64_t round_up(uint64_t n) { return (n + GRANULE - 1) / GRANULE * GRANULE; }

static void wait_for_stdin_close(void) {
    char buffer[64];
    while (read(0, buffer, sizeof buffer) > 0) {}
}

int main(int argc, char **argv) {
    if (argc < 2) return 64;
    void *cuda = dlopen("libcuda.so.1", RTLD_NOW);
    if (!cuda) { fprintf(stderr, "%s\n", dlerror()); return 4; }
    get_proc = (GetProcAddress)dlsym(cuda, "cuGetProcAddress_v2");
    if (!get_proc) return 5;

    FETCH(init, CUresult, (unsigned), "cuInit");
    FETCH(device_get, CUresult, (CUdevice *, int), "cuDeviceGet");
    FETCH(retain, CUresult, (CUcontext *, CUdevice), "cuDevicePrimaryCtxRetain");
    FETCH(set_current, CUresult, (CUcontext), "cuCtxSetCurrent");
    FETCH(mem_alloc, CUresult, (CUdeviceptr *, size_t), "cuMemAlloc");
    FETCH(mem_free, CUresult, (CUdeviceptr), "cuMemFree");
    FETCH(get_info, CUresult, (size_t *, size_t *), "cuMemGetInfo");
    FETCH(total_mem, CUresult, (size_t *, CUdevice), "cuDeviceTotalMem");

    int ordinal = getenv("ALLOC_DEVICE") ? atoi(getenv("ALLOC_DEVICE")) : 0;
    CUdevice dev; CUcontext ctx;
    /* Some programs touch the device before cuInit; the driver refuses, and the answer must not
     * stick. */
    if (getenv("RETAIN_BEFORE_INIT")) { CUcontext early; retain(&early, ordinal); }
    if (init(0) || device_get(&dev, ordinal) || retain(&ctx, dev) || set_current(ctx)) return 6;

    const char *mode = argv[1];
    if (!strcmp(mode, "info")) {
        size_t free_b = 0, total_b = 0, device_total = 0;
        CUresult info_rc = get_info(&free_b, &total_b);
        CUresult total_rc = total_mem(&device_total, dev);
        CUresult null_rc = get_info(NULL, &total_b);
        unsigned long long nv_total = 0, nv_free = 0;
        int nv_rc = -1;
        void *nvml = dlopen("libnvidia-ml.so.1", RTLD_NOW);
        if (nvml) {
            int (*nv_init)(void) = (int (*)(void))dlsym(nvml, "nvmlInit_v2");
            int (*nv_handle)(unsigned, void **) = (int (*)(unsigned, void **))dlsym(nvml, "nvmlDeviceGetHandleByIndex_v2");
            int (*nv_info)(void *, nvmlMemory_t *) = (int (*)(void *, nvmlMemory_t *))dlsym(nvml, "nvmlDeviceGetMemoryInfo");
            void *handle = NULL; nvmlMemory_t memory = {0};
            unsigned index = getenv("NVML_INDEX") ? (unsigned)atoi(getenv("NVML_INDEX")) : 0;
            if (nv_init && nv_handle && nv_info && !nv_init() && !nv_handle(index, &handle)) {
                nv_rc = nv_info(handle, &memory);
                nv_total = memory.total; nv_free = memory.free;
            }
        }
        printf("{\"info_code\":%d,\"free\":%zu,\"total\":%zu,\"device_total_code\":%d,\"device_total\":%zu,"
               "\"null_free_code\":%d,\"nvml_code\":%d,\"nvml_total\":%llu,\"nvml_free\":%llu}\n",
               info_rc, free_b, total_b, total_rc, device_total, null_rc, nv_rc, nv_total, nv_free);
        return 0;
    }
    if (!strcmp(mode, "hold") && argc == 3) {
        CUdeviceptr p = 0;
        CUresult rc = mem_alloc(&p, strtoull(argv[2], NULL, 0));
        printf("{\"code\":%d}\n", rc);
        fflush(stdout);
        wait_for_stdin_close();
        return 0;
    }
    if (!strcmp(mode, "fork") && argc == 4) {
        CUdeviceptr p = 0;
        CUresult parent_rc = mem_alloc(&p, strtoull(argv[2], NULL, 0));
        pid_t child = fork();
        if (child == 0) {
            CUdeviceptr q = 0;
            _exit(mem_alloc(&q, strtoull(argv[3], NULL, 0)) == 0 ? 0 : 10);
        }
        int status = 0;
        waitpid(child, &status, 0);
        printf("{\"code\":%d,\"child_exit\":%d}\n", parent_rc, WIFEXITED(status) ? WEXITSTATUS(status) : -1);
        fflush(stdout);
        wait_for_stdin_close();
        return 0;
    }
    if (!strcmp(mode, "stress") && argc == 5) {
        unsigned seed = (unsigned)strtoul(argv[2], NULL, 0);
        long ops = strtol(argv[3], NULL, 0);
        uint64_t max = strtoull(argv[4], NULL, 0);
        enum { SLOTS = 64 };
        CUdeviceptr live[SLOTS] = {0};
        uint64_t charge[SLOTS] = {0};
        long refused = 0, failed = 0;
        for (long i = 0; i < ops; i++) {
            int slot = rand_r(&seed) % SLOTS;
            if (live[slot]) {
                if (mem_free(live[slot])) failed++;
                live[slot] = 0; charge[slot] = 0;
            } else {
                uint64_t size = 1 + (uint64_t)rand_r(&seed) * (uint64_t)rand_r(&seed) % max;
                CUresult rc = mem_alloc(&live[slot], size);
                if (rc == 0) charge[slot] = round_up(size);
                else if (rc == 2) { refused++; live[slot] = 0; }
                else { failed++; live[slot] = 0; }
            }
        }
        uint64_t total = 0;
        for (int s = 0; s < SLOTS; s++) total += charge[s];
        printf("{\"live\":%llu,\"refused\":%ld,\"failed\":%ld}\n", (unsigned long long)total, refused, failed);
        fflush(stdout);
        wait_for_stdin_close();
        return 0;
    }
    if (strcmp(mode, "fill") || argc != 4) return 64;

    const char *path = argv[2];
    uint64_t step = strtoull(argv[3], NULL, 0);
    enum { MAX_ALLOCS = 4096 };
    static uint64_t objects[MAX_ALLOCS];
    long count = 0;
    CUresult rc = 0;
    CUmemoryPool pool = NULL;
    CUmemAllocationProp prop; memset(&prop, 0, sizeof prop);
    prop.type = 1; prop.location.type = 1; prop.location.id = dev;

    CUresult (*alloc_pitch)(CUdeviceptr *, size_t *, size_t, size_t, unsigned) = NULL;
    CUresult (*alloc_managed)(CUdeviceptr *, size_t, unsigned) = NULL;
    CUresult (*alloc_async)(CUdeviceptr *, size_t, CUstream) = NULL;
    CUresult (*free_async)(CUdeviceptr, CUstream) = NULL;
    CUresult (*pool_alloc)(CUdeviceptr *, size_t, CUmemoryPool, CUstream) = NULL;
    CUresult (*mem_create)(CUmemHandle *, size_t, const CUmemAllocationProp *, uint64_t) = NULL;
    CUresult (*mem_release)(CUmemHandle) = NULL;
    CUresult (*array_create)(CUarray *, const ARRAY_DESC *) = NULL;
    CUresult (*array3d_create)(CUarray *, const ARRAY3D_DESC *) = NULL;
    CUresult (*array_destroy)(CUarray) = NULL;
    size_t last_pitch = 0;

    if (!strcmp(path, "pitch")) alloc_pitch = fetch("cuMemAllocPitch");
    else if (!strcmp(path, "managed")) alloc_managed = fetch("cuMemAllocManaged");
    else if (!strcmp(path, "async")) { alloc_async = fetch("cuMemAllocAsync"); free_async = fetch("cuMemFreeAsync"); }
    else if (!strcmp(path, "pool")) {
        CUresult (*pool_create)(CUmemoryPool *, const CUmemPoolProps *) = fetch("cuMemPoolCreate");
        pool_alloc = fetch("cuMemAllocFromPoolAsync"); free_async = fetch("cuMemFreeAsync");
        CUmemPoolProps props; memset(&props, 0, sizeof props);
        props.allocType = 1; props.location.type = 1; props.location.id = dev;
        if (pool_create(&pool, &props)) return 7;
    }
    else if (!strcmp(path, "vmm")) { mem_create = fetch("cuMemCreate"); mem_release = fetch("cuMemRelease"); }
    else if (!strcmp(path, "array")) { array_create = fetch("cuArrayCreate"); array_destroy = fetch("cuArrayDestroy"); }
    else if (!strcmp(path, "array3d")) { array3d_create = fetch("cuArray3DCreate"); array_destroy = fetch("cuArrayDestroy"); }
    else if (strcmp(path, "alloc")) return 64;

    while (count < MAX_ALLOCS) {
        uint64_t object = 0;
        if (!strcmp(path, "alloc")) rc = mem_alloc((CUdeviceptr *)&object, step);
        else if (alloc_pitch) rc = alloc_pitch((CUdeviceptr *)&object, &last_pitch, 1 << 20, step >> 20, 4);
        else if (alloc_managed) rc = alloc_managed((CUdeviceptr *)&object, step, 1);
        else if (alloc_async) rc = alloc_async((CUdeviceptr *)&object, step, NULL);
        else if (pool_alloc) rc = pool_alloc((CUdeviceptr *)&object, step, pool, NULL);
        else if (mem_create) rc = mem_create((CUmemHandle *)&object, step, &prop, 0);
        else if (array_create) {
            ARRAY_DESC desc = { 1024, step / 4096, 0x20, 1 };
            rc = array_create((CUarray *)&object, &desc);
        } else {
            ARRAY3D_DESC desc = { 1024, 1024, step / (4096 * 1024), 0x20, 1, 0 };
            rc = array3d_create((CUarray *)&object, &desc);
        }
        if (rc) break;
        objects[count++] = object;
    }
    size_t free_b = 0, total_b = 0;
    get_info(&free_b, &total_b);
    CUresult free_rc = 0;
    for (long i = 0; i < count; i++) {
        CUresult r;
        if (free_async) r = free_async(objects[i], NULL);
        else if (mem_release) r = mem_release(objects[i]);
        else if (array_destroy) r = array_destroy((CUarray)(uintptr_t)objects[i]);
        else r = mem_free(objects[i]);
        if (r) free_rc = r;
    }
    size_t free_after = 0;
    get_info(&free_after, &total_b);
    printf("{\"path\":\"%s\",\"allocations\":%ld,\"code\":%d,\"free\":%zu,\"total\":%zu,"
           "\"free_code\":%d,\"free_after\":%zu,\"pitch\":%zu}\n",
           path, count, rc, free_b, total_b, free_rc, free_after, last_pitch);
    return 0;
}
