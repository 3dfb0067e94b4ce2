// Command edsbench runs deltaeds, go-control-plane's LinearCache and
// SnapshotCache, and the wire limit side by side under the same fleet of
// simulated Envoys and the same workloads, and prints how they compare.
//
//	edsbench                       # the short profile (make bench)
//	edsbench -profile=full         # the full scale
//	edsbench -workloads=fleet -servers=deltaeds,linear -scale=0.5
//	edsbench -cpuprofile=bin/prof  # pprof of every child's change phase
//
// Run with -serve=<kind> it is instead one server child, driven on its
// standard input by the parent (see package bench/control).
//
// It owns only flags and process wiring: what a run does is package bench,
// what a child does is package servers. It must never measure or print
// figures itself, nor start anything but its own re-executed children.
package main
