// The pod sandbox's PID 1 (image localhost/pause:node, built by tools/ensure_node.sh). It holds
// the pod's namespaces open until the runtime stops it, and as PID 1 of a shared PID namespace
// it must reap orphans, or they stay zombies for the pod's life.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for sig := range sigs {
		if sig != syscall.SIGCHLD {
			os.Exit(0)
		}
		// One SIGCHLD may stand for several exits: reap until none is left.
		for {
			pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
