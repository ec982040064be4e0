/* test/unit/test_comm_cpu.c — the CPU-thread collectives (cpu/comm_cpu.h) with
 * 1, 2, 3 and 4 ranks, through the rank programs of comm_cases.h. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/comm_cpu.h"
#include "test/unit/comm_cases.h"

static void run_world(int size, void *(*fn)(void *)) {
    ms_err err = {{0}};
    comm_cpu_world *w = comm_cpu_world_create(size, &err);
    cr_assert(w, "%s", err.msg);
    pthread_t th[8];
    rank_arg args[8];
    for (int r = 0; r < size; r++) {
        args[r] = (rank_arg){comm_cpu_world_rank(w, r), 0, ""};
        pthread_create(&th[r], NULL, fn, &args[r]);
    }
    for (int r = 0; r < size; r++) pthread_join(th[r], NULL);
    for (int r = 0; r < size; r++) cr_expect(args[r].ok, "%d ranks: rank %d failed", size, r);
    comm_cpu_world_free(w);
}

Test(comm_cpu, all_to_all_v) {
    for (int size = 1; size <= 4; size++) run_world(size, a2a_rank);
}

Test(comm_cpu, all_reduce_all_gather_barrier) {
    for (int size = 1; size <= 4; size++) run_world(size, reduce_gather_rank);
}

Test(comm_cpu, a_failing_rank_releases_the_others, .timeout = 20) { run_world(3, fault_rank); }

Test(comm_cpu, receive_buffer_too_small_fails_everyone, .timeout = 20) {
    ms_err err = {{0}};
    comm_cpu_world *w = comm_cpu_world_create(1, &err);
    comm *c = comm_cpu_world_rank(w, 0);
    char send[100] = {0}, recv[10];
    size_t sb[1] = {100}, rb[1];
    cr_expect_neq(c->ops->all_to_all_v(c, send, sb, recv, sizeof recv, rb, &err), 0);
    cr_expect(strstr(err.msg, "too small"), "%s", err.msg);
    comm_cpu_world_free(w);
}
