// A minimal stand-in for Pulumi's nodejs language host. The real one
// (github.com/pulumi/pulumi/sdk/nodejs/cmd/pulumi-language-nodejs/v3) is an untagged module and this
// machine's Go module proxy serves none of its pseudo-versions, so CI cannot build it. This host does
// the one thing `pulumi preview|up|destroy` needs from a language host: Run, which starts the
// program with @pulumi/pulumi's own runner (node_modules/@pulumi/pulumi/cmd/run) against the
// engine's resource monitor. Everything else answers Unimplemented, which the engine tolerates.
// Users keep the official host (Pulumi's CLI distribution ships it).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"

	"github.com/google/shlex"
	"github.com/pulumi/pulumi/sdk/v3/go/common/util/rpcutil"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/emptypb"
)

// Version is set with -ldflags "-X main.Version=...".
var Version = "3.0.0"

type host struct {
	pulumirpc.UnimplementedLanguageRuntimeServer
	engine string
}

func (h *host) Handshake(ctx context.Context, req *pulumirpc.LanguageHandshakeRequest) (*pulumirpc.LanguageHandshakeResponse, error) {
	if req.EngineAddress != "" {
		h.engine = req.EngineAddress
	}
	return &pulumirpc.LanguageHandshakeResponse{}, nil
}

func (h *host) GetPluginInfo(context.Context, *emptypb.Empty) (*pulumirpc.PluginInfo, error) {
	return &pulumirpc.PluginInfo{Version: Version}, nil
}

func (h *host) GetRequiredPackages(context.Context, *pulumirpc.GetRequiredPackagesRequest) (*pulumirpc.GetRequiredPackagesResponse, error) {
	// Providers are loaded when the program first registers one of their resources.
	return &pulumirpc.GetRequiredPackagesResponse{}, nil
}

func (h *host) GetRequiredPlugins(context.Context, *pulumirpc.GetRequiredPluginsRequest) (*pulumirpc.GetRequiredPluginsResponse, error) {
	return &pulumirpc.GetRequiredPluginsResponse{}, nil
}

// runner finds @pulumi/pulumi/cmd/run from the program directory upwards, as node would.
func runner(dir string) (string, error) {
	for d := dir; ; d = filepath.Dir(d) {
		p := filepath.Join(d, "node_modules", "@pulumi", "pulumi", "cmd", "run")
		if _, err := os.Stat(filepath.Join(p, "index.js")); err == nil {
			return p, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("@pulumi/pulumi is not installed for %s: run `npm install`", dir)
		}
	}
}

func (h *host) Run(ctx context.Context, req *pulumirpc.RunRequest) (*pulumirpc.RunResponse, error) {
	programDir, entry, root := req.Pwd, ".", req.Pwd
	opts := map[string]interface{}{}
	if info := req.GetInfo(); info != nil {
		programDir, root = info.ProgramDirectory, info.RootDirectory
		if info.EntryPoint != "" {
			entry = info.EntryPoint
		}
		if info.Options != nil {
			opts = info.Options.AsMap()
		}
	}
	run, err := runner(programDir)
	if err != nil {
		return &pulumirpc.RunResponse{Error: err.Error()}, nil
	}
	args := []string{run,
		"--monitor", req.MonitorAddress, "--engine", h.engine,
		"--organization", req.Organization, "--project", req.Project, "--stack", req.Stack,
		"--pwd", req.Pwd, "--root-directory", root,
	}
	if req.DryRun {
		args = append(args, "--dry-run")
	}
	if req.Parallel > 0 {
		args = append(args, "--parallel", strconv.Itoa(int(req.Parallel)))
	}
	args = append(args, entry)
	args = append(args, req.Args...)

	config, err := json.Marshal(req.Config)
	if err != nil {
		return nil, err
	}
	secretKeys, err := json.Marshal(req.ConfigSecretKeys)
	if err != nil {
		return nil, err
	}
	// Pulumi.yaml `runtime.options.nodeargs`: node's own flags, split as a shell would, before the runner.
	var nodeargs []string
	if v, ok := opts["nodeargs"]; ok {
		s, isString := v.(string)
		if !isString {
			return &pulumirpc.RunResponse{Error: "nodeargs option must be a string"}, nil
		}
		if nodeargs, err = shlex.Split(s); err != nil {
			return &pulumirpc.RunResponse{Error: fmt.Sprintf("nodeargs option: %v", err)}, nil
		}
	}
	cmd := exec.CommandContext(ctx, "node", append(nodeargs, args...)...)
	cmd.Dir = req.Pwd
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), "PULUMI_CONFIG="+string(config), "PULUMI_CONFIG_SECRET_KEYS="+string(secretKeys))
	// Pulumi.yaml `runtime.options` (typescript defaults to true, as in the official host).
	ts := true
	if v, ok := opts["typescript"].(bool); ok {
		ts = v
	}
	cmd.Env = append(cmd.Env, "PULUMI_NODEJS_TYPESCRIPT="+strconv.FormatBool(ts))
	if v, ok := opts["tsconfig"].(string); ok && v != "" {
		cmd.Env = append(cmd.Env, "PULUMI_NODEJS_TSCONFIG_PATH="+v)
	}
	if err := cmd.Run(); err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			// 32: the program reported its error already (@pulumi/pulumi's convention).
			if exit.ExitCode() == 32 {
				return &pulumirpc.RunResponse{Bail: true}, nil
			}
			return &pulumirpc.RunResponse{Error: fmt.Sprintf("Program exited with non-zero exit code: %d", exit.ExitCode())}, nil
		}
		return &pulumirpc.RunResponse{Error: err.Error()}, nil
	}
	return &pulumirpc.RunResponse{}, nil
}

func main() {
	h := &host{}
	// Flags may precede it; the engine's address is the last argument.
	for _, a := range os.Args[1:] {
		if len(a) > 0 && a[0] != '-' {
			h.engine = a
		}
	}
	handle, err := rpcutil.ServeWithOptions(rpcutil.ServeOptions{
		Init: func(srv *grpc.Server) error {
			pulumirpc.RegisterLanguageRuntimeServer(srv, h)
			return nil
		},
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "pulumi-language-nodejs: %v\n", err)
		os.Exit(1)
	}
	fmt.Printf("%d\n", handle.Port)
	if err := <-handle.Done; err != nil {
		fmt.Fprintf(os.Stderr, "pulumi-language-nodejs: %v\n", err)
		os.Exit(1)
	}
}
