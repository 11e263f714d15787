package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// roleEnv names the environment variable that makes the program (the demo,
// or a test binary of this package) a child process: a worker or a server
// node. The parent re-executes its own binary with it set.
const roleEnv = "NATSDEMO_ROLE"

// The children's roles.
const (
	roleWorker = "worker"
	roleNode   = "node"
)

// The lines a child writes on its standard output: "ready" once it serves,
// then, for a worker, "stats" and its counts as it ends.
const (
	readyLine = "ready"
	statsLine = "stats"
)

// childMain runs the child process named by role with args, and returns its
// exit code. A child ends when its standard input reaches end of file: the
// parent closes it to stop the child, and the operating system closes it
// when the parent dies, so no child outlives the demo or the test.
func childMain(role string, args []string) int {
	var err error
	switch role {
	case roleWorker:
		err = workerMain(args)
	case roleNode:
		err = nodeMain(args)
	default:
		err = fmt.Errorf("unknown %s %q", roleEnv, role)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "natsdemo %s: %v\n", role, err)
		return 1
	}
	return 0
}

// stdinClosed returns a channel closed when standard input ends.
func stdinClosed() <-chan struct{} {
	done := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		close(done)
	}()
	return done
}

// workerArgs renders c as the flags of a worker process.
func workerArgs(c workerConfig) []string {
	return []string{
		"-server", c.url, "-id", c.id, "-raw=" + strconv.FormatBool(c.raw),
		"-partitions", strconv.Itoa(c.partitions), "-lease", c.lease.String(),
		"-prefetch", strconv.Itoa(c.prefetch), "-inflight", strconv.Itoa(c.inFlight),
		"-concurrency", strconv.Itoa(c.concurrency), "-latency", c.latency.String(),
		"-hash", strconv.Itoa(c.hash),
	}
}

// workerMain is a worker process: it runs until its standard input ends,
// then drains and writes its counts.
func workerMain(args []string) error {
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	var c workerConfig
	fs.StringVar(&c.url, "server", "", "")
	fs.StringVar(&c.id, "id", "", "")
	fs.BoolVar(&c.raw, "raw", false, "")
	fs.IntVar(&c.partitions, "partitions", 0, "")
	fs.DurationVar(&c.lease, "lease", 2*time.Second, "")
	fs.IntVar(&c.prefetch, "prefetch", 256, "")
	fs.IntVar(&c.inFlight, "inflight", 256, "")
	fs.IntVar(&c.concurrency, "concurrency", 1, "")
	fs.DurationVar(&c.latency, "latency", 0, "")
	fs.IntVar(&c.hash, "hash", 0, "")
	if err := fs.Parse(args); err != nil {
		return err
	}
	st, err := runWorker(c, stdinClosed(), func() { fmt.Println(readyLine) })
	if err != nil {
		return err
	}
	fmt.Println(statsLine, st.received, st.redelivered, st.published, st.duplicates, st.partitions)
	return nil
}

// liveChildren counts the child processes started and not yet reaped.
var liveChildren atomic.Int32

// child is a child process started by the parent.
type child struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string // its standard output, closed at its end
	done  chan struct{}
	err   error // how it ended, once done is closed
}

// startChild re-executes the running binary as role with args, and waits
// until the child writes "ready" (or ends, or readyWait passes).
func startChild(role string, args []string, readyWait time.Duration) (*child, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), roleEnv+"="+role)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	liveChildren.Add(1)
	c := &child{cmd: cmd, stdin: stdin, lines: make(chan string, 4), done: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
		close(c.lines)
		c.err = cmd.Wait()
		liveChildren.Add(-1)
		close(c.done)
	}()
	select {
	case l, ok := <-c.lines:
		if ok && l == readyLine {
			return c, nil
		}
		c.kill()
		return nil, fmt.Errorf("%s %v did not start", role, args)
	case <-time.After(readyWait):
		c.kill()
		return nil, fmt.Errorf("%s %v not ready after %v", role, args, readyWait)
	}
}

// kill SIGKILLs the child and waits for its end.
func (c *child) kill() {
	_ = c.cmd.Process.Kill()
	for range c.lines {
	}
	<-c.done
}

// stop closes the child's standard input, so that it ends by itself,
// and returns its last line of output; it kills the child after wait.
func (c *child) stop(wait time.Duration) (string, error) {
	_ = c.stdin.Close()
	var last string
	timeout := time.After(wait)
	for {
		select {
		case l, ok := <-c.lines:
			if !ok {
				<-c.done
				return last, c.err
			}
			last = l
		case <-timeout:
			c.kill()
			return last, fmt.Errorf("%v: killed, still running %v after it was told to stop", c.cmd.Args, wait)
		}
	}
}

// stopWorker stops a worker process and returns its counts.
func stopWorker(c *child, wait time.Duration) (workerStats, error) {
	last, err := c.stop(wait)
	if err != nil {
		return workerStats{}, err
	}
	var st workerStats
	f := strings.Fields(last)
	if len(f) != 6 || f[0] != statsLine {
		return st, errors.New("worker ended without its counts")
	}
	for i, p := range []*uint64{&st.received, &st.redelivered, &st.published, &st.duplicates, &st.partitions} {
		if *p, err = strconv.ParseUint(f[i+1], 10, 64); err != nil {
			return st, err
		}
	}
	return st, nil
}
