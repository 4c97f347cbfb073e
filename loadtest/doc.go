// Package loadtest simulates a fleet of Kubernetes nodes that serve real
// captures, and receives remote write with an exact account of what
// arrived, so that a run of the pipeline can say how many samples it lost.
package loadtest
