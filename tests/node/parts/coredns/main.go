// CoreDNS with only the plugins a test cluster's DNS needs (tools/ensure_node.sh builds it).
// Upstream's main imports core/plugin, which links every plugin and its cloud SDKs; importing
// coremain plus a few plugins keeps the binary and the build small. forward is left out on
// purpose: pods here must not reach anything off the machine.
//
// dnsserver.Directives (the execution order) is left as upstream generated it: a directive
// whose plugin is not linked is harmless until a Corefile uses it, and then startup fails with
// "no action found for directive 'forward' ... (missing a plugin?)".
package main

import (
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes" // also links metadata, prometheus, transfer
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
)

func main() { coremain.Run() }
