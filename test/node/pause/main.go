// Command pause is the node's sandbox ("pause") image: it holds a pod's
// namespaces and exits on SIGINT or SIGTERM. No registry is reachable here, so
// test/node/node.sh builds it (static, CGO_ENABLED=0) into a one-file image.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGINT, syscall.SIGTERM)
	<-c
}
