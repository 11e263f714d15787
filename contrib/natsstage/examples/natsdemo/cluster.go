package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// nodeWait bounds the start of a server node.
const nodeWait = 30 * time.Second

// servers is where the demo's JetStream runs: one embedded server in the
// demo's process, or a cluster of nodes, each its own child process.
type servers struct {
	url      string // every client URL, comma-separated
	replicas int
	dir      string
	local    *server.Server
	nodes    []*node
}

// node is one server of a cluster, in a child process.
type node struct {
	name string
	args []string
	proc *child // nil while it is down
}

// startServers starts one embedded server (nodes = 0) or a cluster of
// nodes on loopback random ports, with their stores under a new temporary
// directory.
func startServers(nodes int) (*servers, error) {
	dir, err := os.MkdirTemp("", "natsdemo-")
	if err != nil {
		return nil, err
	}
	s := &servers{dir: dir, replicas: 1}
	if nodes == 0 {
		err = s.startLocal()
	} else {
		err = s.startCluster(nodes)
	}
	if err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

func (s *servers) startLocal() error {
	srv, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: server.RANDOM_PORT,
		JetStream: true, StoreDir: s.dir, NoLog: true, NoSigs: true,
	})
	if err != nil {
		return err
	}
	srv.Start()
	s.local = srv
	if !srv.ReadyForConnections(nodeWait) {
		return errors.New("embedded server not ready")
	}
	s.url = srv.ClientURL()
	return nil
}

// startCluster starts n nodes. The ports are chosen here, free ones picked
// by the system, since each node must know the others' route ports.
func (s *servers) startCluster(n int) error {
	ports, err := freePorts(2 * n)
	if err != nil {
		return err
	}
	var routes, urls []string
	for i := range n {
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", ports[n+i]))
		urls = append(urls, fmt.Sprintf("nats://127.0.0.1:%d", ports[i]))
	}
	s.url, s.replicas = strings.Join(urls, ","), n
	for i := range n {
		name := "n" + strconv.Itoa(i+1)
		s.nodes = append(s.nodes, &node{name: name, args: []string{
			"-name", name, "-port", strconv.Itoa(ports[i]), "-cluster-port", strconv.Itoa(ports[n+i]),
			"-routes", strings.Join(routes, ","), "-dir", filepath.Join(s.dir, name),
		}})
	}
	for _, nd := range s.nodes {
		if err := nd.start(); err != nil {
			return err
		}
	}
	return nil
}

func (nd *node) start() error {
	p, err := startChild(roleNode, nd.args, nodeWait)
	if err != nil {
		return err
	}
	nd.proc = p
	return nil
}

// kill SIGKILLs the node named name.
func (s *servers) kill(name string) error {
	for _, nd := range s.nodes {
		if nd.name == name && nd.proc != nil {
			nd.proc.kill()
			nd.proc = nil
			return nil
		}
	}
	return fmt.Errorf("no running node %q", name)
}

// restart starts again, on their ports and stores, the nodes that are down.
func (s *servers) restart() error {
	for _, nd := range s.nodes {
		if nd.proc == nil {
			if err := nd.start(); err != nil {
				return err
			}
		}
	}
	return nil
}

// close stops every server and removes the stores.
func (s *servers) close() {
	if s.local != nil {
		s.local.Shutdown()
		s.local.WaitForShutdown()
	}
	for _, nd := range s.nodes {
		if nd.proc != nil {
			if _, err := nd.proc.stop(10 * time.Second); err != nil {
				fmt.Fprintf(os.Stderr, "natsdemo: node %s: %v\n", nd.name, err)
			}
		}
	}
	_ = os.RemoveAll(s.dir)
}

// freePorts returns n loopback ports free at the time of the call.
func freePorts(n int) ([]int, error) {
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// nodeMain is a server node process: a JetStream cluster member that runs
// until its standard input ends.
func nodeMain(args []string) error {
	fs := flag.NewFlagSet("node", flag.ContinueOnError)
	name := fs.String("name", "", "")
	port := fs.Int("port", 0, "")
	clusterPort := fs.Int("cluster-port", 0, "")
	routes := fs.String("routes", "", "")
	dir := fs.String("dir", "", "")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var routeURLs []*url.URL
	for r := range strings.SplitSeq(*routes, ",") {
		u, err := url.Parse(r)
		if err != nil {
			return err
		}
		routeURLs = append(routeURLs, u)
	}
	srv, err := server.NewServer(&server.Options{
		ServerName: *name, Host: "127.0.0.1", Port: *port,
		JetStream: true, StoreDir: *dir, NoLog: true, NoSigs: true,
		Cluster: server.ClusterOpts{Name: "natsdemo", Host: "127.0.0.1", Port: *clusterPort},
		Routes:  routeURLs,
	})
	if err != nil {
		return err
	}
	srv.Start()
	defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
	if !srv.ReadyForConnections(nodeWait) {
		return errors.New("not ready")
	}
	fmt.Println(readyLine)
	<-stdinClosed()
	return nil
}
