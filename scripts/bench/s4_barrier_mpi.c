/* S4's Open MPI reference: MPI_Barrier rounds, timed by rank 0.
 * Usage: mpirun -n N s4_barrier_mpi REPS ROUNDS
 * Prints one line per batch: microseconds per round. Built with mpicc by
 * `multiproc bench` when mpicc and mpirun are on the PATH. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    int reps = argc > 1 ? atoi(argv[1]) : 5;
    long rounds = argc > 2 ? atol(argv[2]) : 1000;
    for (int r = 0; r < reps; r++) {
        MPI_Barrier(MPI_COMM_WORLD);
        double t = MPI_Wtime();
        for (long i = 0; i < rounds; i++)
            MPI_Barrier(MPI_COMM_WORLD);
        double us = (MPI_Wtime() - t) * 1e6 / (double)rounds;
        if (rank == 0)
            printf("%.4f\n", us);
    }
    MPI_Finalize();
    return 0;
}
