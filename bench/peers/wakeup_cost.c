/* What one wake-up costs on this host: two threads hand a byte back and forth over two pipes,
 * each sleeping in read() until the other writes, first both on one CPU, then one on each of two.
 * Prints the CPU time (user + system, both threads) and the wall time per wake-up, so that
 * bench/profile_bench.py can set a server's context switches beside what each one costs here.
 *
 *   wakeup_cost CPU_A CPU_B [ROUND_TRIPS]     (CPU_A == CPU_B: the same-CPU case)
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static int to_other[2], to_first[2];
static long round_trips = 20000;

static void pin(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set) != 0) {
        perror("sched_setaffinity");
        exit(2);
    }
}

static void *other_side(void *cpu) {
    pin(*(int *)cpu);
    char byte;
    for (long i = 0; i < round_trips; i++) {
        if (read(to_other[0], &byte, 1) != 1 || write(to_first[1], &byte, 1) != 1)
            exit(2);
    }
    return NULL;
}

static double seconds(struct timeval t) { return t.tv_sec + t.tv_usec / 1e6; }

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s CPU_A CPU_B [ROUND_TRIPS]\n", argv[0]);
        return 2;
    }
    int first_cpu = atoi(argv[1]), other_cpu = atoi(argv[2]);
    if (argc > 3)
        round_trips = atol(argv[3]);
    pin(first_cpu);
    if (pipe(to_other) || pipe(to_first)) {
        perror("pipe");
        return 2;
    }
    pthread_t thread;
    if (pthread_create(&thread, NULL, other_side, &other_cpu) != 0) {
        fprintf(stderr, "pthread_create failed\n");
        return 2;
    }
    char byte = 'x';
    struct timespec start, end;
    struct rusage before, after;
    getrusage(RUSAGE_SELF, &before);  /* (both threads: the process's) */
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (long i = 0; i < round_trips; i++) {
        if (write(to_other[1], &byte, 1) != 1 || read(to_first[0], &byte, 1) != 1)
            return 2;
    }
    clock_gettime(CLOCK_MONOTONIC, &end);
    pthread_join(thread, NULL);
    getrusage(RUSAGE_SELF, &after);
    double wakeups = 2.0 * round_trips;
    double cpu = seconds(after.ru_utime) - seconds(before.ru_utime) + seconds(after.ru_stime) -
                 seconds(before.ru_stime);
    double wall = end.tv_sec - start.tv_sec + (end.tv_nsec - start.tv_nsec) / 1e9;
    printf("cpu_us_per_wakeup %.2f wall_us_per_wakeup %.2f\n", cpu / wakeups * 1e6, wall / wakeups * 1e6);
    return 0;
}
