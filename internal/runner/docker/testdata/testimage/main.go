// Command testprog is the workload of the Docker runner's tests. It is
// built statically (CGO_ENABLED=0) into an image FROM scratch, so that the
// tests need nothing from a registry. Flags run in the order listed.
package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func main() {
	var (
		out     = flag.String("print", "", "line to print on stdout")
		errOut  = flag.String("stderr", "", "line to print on stderr")
		env     = flag.String("env", "", "comma-separated variables to print as NAME=value")
		args    = flag.Bool("args", false, "print the arguments")
		alloc   = flag.Int("alloc-mib", 0, "allocate and touch this many MiB")
		term    = flag.String("term", "", "on SIGTERM: exit (print and exit 0) or ignore")
		sleep   = flag.Duration("sleep", 0, "sleep this long")
		code    = flag.Int("exit", 0, "exit code")
		hostile = flag.Bool("hostile", false, "try to mount, reach the Docker socket, chown and fork-bomb; print what happened")
		listen  = flag.String("listen", "", "serve TCP on this address: greet each client with \"hello from testprog\"")
		cat     = flag.String("cat", "", "print this file, then try to write, chmod and remove it, printing each outcome")
		dial    = flag.String("dial", "", "try to connect to this TCP address (2s timeout) and print the outcome")
	)
	flag.Parse()
	if *dial != "" {
		c, err := net.DialTimeout("tcp", *dial, 2*time.Second)
		if err == nil {
			c.Close()
		}
		fmt.Printf("dial %s: %v\n", *dial, errText(err))
	}
	if *cat != "" {
		catFile(*cat)
	}
	if *listen != "" {
		l, err := net.Listen("tcp", *listen)
		if err != nil {
			fmt.Println("listen:", err)
			os.Exit(1)
		}
		fmt.Println("listening on", *listen)
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				fmt.Fprintln(c, "hello from testprog")
				c.Close()
			}
		}()
	}
	if *hostile {
		attack()
	}
	if *out != "" {
		fmt.Println(*out)
	}
	if *errOut != "" {
		fmt.Fprintln(os.Stderr, *errOut)
	}
	if *env != "" {
		for _, k := range strings.Split(*env, ",") {
			fmt.Printf("%s=%s\n", k, os.Getenv(k))
		}
	}
	if *args {
		fmt.Printf("args=%q\n", os.Args[1:])
	}
	if *alloc > 0 {
		var keep [][]byte
		for i := 0; i < *alloc; i++ {
			b := make([]byte, 1<<20)
			for j := range b {
				b[j] = byte(j)
			}
			keep = append(keep, b)
		}
		fmt.Printf("allocated %d MiB\n", len(keep))
	}
	switch *term {
	case "exit":
		c := make(chan os.Signal, 1)
		signal.Notify(c, syscall.SIGTERM)
		go func() {
			<-c
			fmt.Println("got SIGTERM")
			os.Exit(0)
		}()
	case "ignore":
		signal.Ignore(syscall.SIGTERM)
	}
	if *term != "" {
		fmt.Println("ready")
	}
	time.Sleep(*sleep)
	os.Exit(*code)
}

// attack does what a hostile image would try and prints the outcome of
// each attempt on its own line.
func attack() {
	fmt.Printf("mount: %v\n", errText(syscall.Mount("none", "/dev/shm", "tmpfs", 0, "")))
	for _, p := range []string{"/var/run/docker.sock", "/run/docker.sock"} {
		_, err := os.Stat(p)
		if errors.Is(err, os.ErrNotExist) {
			fmt.Printf("%s: absent\n", p)
		} else {
			fmt.Printf("%s: PRESENT (%v)\n", p, err)
		}
	}
	fmt.Printf("chown: %v\n", errText(os.Chown("/testprog", 1, 1)))
	n := 0
	var err error
	for ; n < 5000; n++ {
		cmd := exec.Command("/testprog", "-sleep", "1h")
		if err = cmd.Start(); err != nil {
			break
		}
	}
	fmt.Printf("forks: %d (%v)\n", n, errText(err))
}

// catFile prints a file and what happened to attempts to change it.
func catFile(path string) {
	b, err := os.ReadFile(path)
	if err != nil {
		fmt.Printf("read: %v\n", errText(err))
	} else {
		fmt.Printf("content: %q\n", b)
	}
	if st, err := os.Stat(path); err == nil {
		fmt.Printf("mode: %v\n", st.Mode().Perm())
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err == nil {
		f.Close()
	}
	fmt.Printf("write: %v\n", errText(err))
	fmt.Printf("chmod: %v\n", errText(os.Chmod(path, 0o666)))
	fmt.Printf("remove: %v\n", errText(os.Remove(path)))
}

func errText(err error) string {
	if err == nil {
		return "ok"
	}
	var pe *os.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	return err.Error()
}
