/* Prints what NVML's per-process utilization really answers on this machine, to see the
 * driver's sample period and reporting delay: every INTERVAL_MS for SECONDS, one line per
 * sample not seen before ("sample QUERY_US PID TIMESTAMP_US SM_UTIL"), and one per query
 * ("query QUERY_US CODE COUNT DEVICE_GPU_UTIL"), then every sample NVML still keeps ("kept ...").
 * Build: cc -O2 -o nvml_samples nvml_samples.c -ldl
 * Usage: nvml_samples SECONDS INTERVAL_MS */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    unsigned int pid;
    unsigned long long timeStamp;
    unsigned int smUtil, memUtil, encUtil, decUtil;
} sample_t;
typedef struct { unsigned int gpu, memory; } rates_t;

static unsigned long long realtime_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (unsigned long long)ts.tv_sec * 1000000ull + ts.tv_nsec / 1000;
}

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: nvml_samples SECONDS INTERVAL_MS\n"); return 2; }
    double seconds = atof(argv[1]);
    int interval_ms = atoi(argv[2]);
    void *nvml = dlopen("libnvidia-ml.so.1", RTLD_NOW);
    if (!nvml) { fprintf(stderr, "%s\n", dlerror()); return 1; }
    int (*init)(void) = dlsym(nvml, "nvmlInit_v2");
    int (*by_index)(unsigned, void **) = dlsym(nvml, "nvmlDeviceGetHandleByIndex_v2");
    int (*utilization)(void *, sample_t *, unsigned *, unsigned long long) =
        dlsym(nvml, "nvmlDeviceGetProcessUtilization");
    int (*rates)(void *, rates_t *) = dlsym(nvml, "nvmlDeviceGetUtilizationRates");
    void *device = 0;
    if (init() || by_index(0, &device)) { fprintf(stderr, "nvml init failed\n"); return 1; }
    unsigned long long start = realtime_us(), last_seen = 0;
    static sample_t buffer[512];
    while (realtime_us() - start < seconds * 1e6) {
        unsigned count = 512;
        unsigned long long now = realtime_us();
        int code = utilization(device, buffer, &count, last_seen);
        rates_t r = {0, 0};
        rates(device, &r);
        printf("query %llu %d %u %u\n", now - start, code, code == 0 ? count : 0, r.gpu);
        if (code == 0) {
            unsigned long long newest = last_seen;
            for (unsigned i = 0; i < count; i++) {
                if (buffer[i].timeStamp <= last_seen) continue;
                printf("sample %llu %u %lld %u\n", now - start, buffer[i].pid,
                       (long long)buffer[i].timeStamp - (long long)start, buffer[i].smUtil);
                if (buffer[i].timeStamp > newest) newest = buffer[i].timeStamp;
            }
            last_seen = newest;
        }
        fflush(stdout);
        usleep(interval_ms * 1000);
    }
    unsigned count = 512;
    unsigned long long now = realtime_us();
    if (utilization(device, buffer, &count, 0) == 0)
        for (unsigned i = 0; i < count; i++)
            printf("kept %llu %u %lld %u\n", now - start, buffer[i].pid,
                   (long long)buffer[i].timeStamp - (long long)start, buffer[i].smUtil);
    return 0;
}
