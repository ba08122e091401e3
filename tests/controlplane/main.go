// Command k8s-testbin is the project's test cluster: one static binary that runs a real
// kube-apiserver, kube-controller-manager, embedded etcd, and the node's kubelet,
// kube-scheduler and kube-proxy, each in its own process (the first argument picks which),
// and kubectl of the same release when invoked through a link named kubectl. Built by
// tools/ensure_controlplane.sh; used by tests/e2e and tests/node.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
	_ "time/tzdata"

	clientv3 "go.etcd.io/etcd/client/v3"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"k8s.io/component-base/cli"
	"k8s.io/component-base/logs"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	kubectl "k8s.io/kubectl/pkg/cmd"
	kubectlutil "k8s.io/kubectl/pkg/cmd/util"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	proxy "k8s.io/kubernetes/cmd/kube-proxy/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
	kubelet "k8s.io/kubernetes/cmd/kubelet/app"
)

const usage = "usage: k8s-testbin kube-apiserver|kube-controller-manager|kube-scheduler|kube-proxy|kubelet FLAGS... | etcd -data-dir DIR [-client-port N] | etcd-compact ETCD_URL; as kubectl through a link named kubectl"

func main() {
	if filepath.Base(os.Args[0]) == "kubectl" {
		runKubectl()
		return
	}
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, usage)
		os.Exit(2)
	}
	switch os.Args[1] {
	case "kube-apiserver":
		cmd := apiserver.NewAPIServerCommand()
		cmd.SetArgs(os.Args[2:])
		os.Exit(cli.Run(cmd))
	case "kube-controller-manager":
		// Its own process: the two components register global feature gates.
		cmd := controllermanager.NewControllerManagerCommand()
		cmd.SetArgs(os.Args[2:])
		os.Exit(cli.Run(cmd))
	case "kube-scheduler":
		cmd := scheduler.NewSchedulerCommand()
		cmd.SetArgs(os.Args[2:])
		os.Exit(cli.Run(cmd))
	case "kube-proxy":
		cmd := proxy.NewProxyCommand()
		cmd.SetArgs(os.Args[2:])
		os.Exit(cli.Run(cmd))
	case "kubelet":
		cmd := kubelet.NewKubeletCommand(context.Background())
		cmd.SetArgs(os.Args[2:])
		os.Exit(cli.Run(cmd))
	case "etcd":
		os.Exit(runEtcd(os.Args[2:]))
	case "etcd-compact":
		os.Exit(compactEtcd(os.Args[2:]))
	}
	fmt.Fprintln(os.Stderr, usage)
	os.Exit(2)
}

// runKubectl is upstream kubectl's main: it reads os.Args itself (plugins, verbosity).
func runKubectl() {
	logs.GlogSetter(kubectl.GetLogVerbosity(os.Args)) // nolint:errcheck
	command := kubectl.NewDefaultKubectlCommand()
	if err := cli.RunNoErrOutput(command); err != nil {
		kubectlutil.CheckErr(err)
	}
}

// compactEtcd compacts etcd's history up to its current revision, so that watches resuming
// from an older resourceVersion get 410 Gone, as after a real cluster's periodic compaction.
func compactEtcd(args []string) int {
	if len(args) != 1 {
		fmt.Fprintln(os.Stderr, usage)
		return 2
	}
	client, err := clientv3.New(clientv3.Config{Endpoints: args, DialTimeout: 10 * time.Second})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	status, err := client.Status(ctx, args[0])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if _, err := client.Compact(ctx, status.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Printf("COMPACTED=%d\n", status.Header.Revision)
	return 0
}

// runEtcd starts a single-member etcd for tests and prints ETCD_URL=... once it serves.
// A fixed -client-port lets the same data directory be served again at the same address.
func runEtcd(args []string) int {
	flags := flag.NewFlagSet("etcd", flag.ContinueOnError)
	dataDir := flags.String("data-dir", "", "data directory (required)")
	clientPort := flags.Int("client-port", 0, "client port on 127.0.0.1 (0 picks a free one)")
	if err := flags.Parse(args); err != nil || *dataDir == "" {
		fmt.Fprintln(os.Stderr, usage)
		return 2
	}
	ports := freePorts(2)
	if *clientPort != 0 {
		ports[0] = *clientPort
	}
	client := loopbackURL(ports[0])
	peer := loopbackURL(ports[1])

	cfg := embed.NewConfig()
	cfg.Dir = *dataDir
	cfg.UnsafeNoFsync = true // a throwaway single member: durability is not the point
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{client}, []url.URL{client}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peer}, []url.URL{peer}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	logConfig := zap.NewProductionConfig()
	logConfig.Level = zap.NewAtomicLevelAt(zap.WarnLevel)
	logger, err := logConfig.Build()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(logger)

	server, err := embed.StartEtcd(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer server.Close()
	select {
	case <-server.Server.ReadyNotify():
		fmt.Println("ETCD_URL=" + client.String())
	case <-time.After(60 * time.Second):
		server.Server.Stop()
		fmt.Fprintln(os.Stderr, "etcd did not become ready in 60 s")
		return 1
	}
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	select {
	case <-signals:
		return 0
	case err := <-server.Err():
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
}

func loopbackURL(port int) url.URL {
	return url.URL{Scheme: "http", Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(port))}
}

// freePorts asks the kernel for n free loopback ports (the window until etcd binds is tiny).
func freePorts(n int) []int {
	listeners := make([]net.Listener, 0, n)
	ports := make([]int, 0, n)
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			panic(err)
		}
		listeners = append(listeners, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range listeners {
		l.Close()
	}
	return ports
}
