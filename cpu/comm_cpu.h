/* cpu/comm_cpu.h — engine/comm.h over threads of one process: W ranks share a
 * world; each collective publishes pointers, meets at a barrier, copies, and
 * meets again before buffers may be reused. The world owns the rank handles;
 * create it before the rank threads start and free it after they are joined. */
#ifndef MS_COMM_CPU_H
#define MS_COMM_CPU_H

#include "engine/comm.h"

typedef struct comm_cpu_world comm_cpu_world;

comm_cpu_world *comm_cpu_world_create(int size, ms_err *err);
void comm_cpu_world_free(comm_cpu_world *w);
/* The handle of rank r (0 <= r < size), owned by the world. */
comm *comm_cpu_world_rank(comm_cpu_world *w, int r);

#endif
