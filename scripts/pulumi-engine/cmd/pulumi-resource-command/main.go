// A minimal stand-in for the command provider (pulumi-resource-command) that @pulumi/command 1.2.1
// talks to. The real one (github.com/pulumi/pulumi-command/provider) is tagged only at the repository
// root, so its module exists only as pseudo-versions, which this machine's Go module proxy does not
// serve. This implements the subset this project uses, with the documented semantics:
//   - command:local:Command: `create` runs on create; a change of `triggers` replaces the resource
//     (delete + create); any other input change runs `update` (falling back to `create`); `delete`
//     runs on delete with PULUMI_COMMAND_STDOUT/STDERR of the last run; outputs `stdout`, `stderr`;
//     nothing runs during preview; a non-zero exit fails the operation.
//   - command:local:run (invoke): runs the command, also during preview, returns stdout/stderr.
//
// Users get the official provider from `pulumi plugin install resource command 1.2.1`.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"

	"github.com/pulumi/pulumi/pkg/v3/resource/provider"
	"github.com/pulumi/pulumi/sdk/v3/go/common/diag"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/plugin"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"google.golang.org/protobuf/types/known/emptypb"
)

// Version is set with -ldflags "-X main.Version=...": the version @pulumi/command asks for.
var Version = "1.2.1"

const commandType = "command:local:Command"

var inputKeys = []string{"create", "update", "delete", "dir", "environment", "interpreter", "stdin", "logging", "triggers", "addPreviousOutputInEnv", "assetPaths", "archivePaths"}

type prov struct {
	pulumirpc.UnimplementedResourceProviderServer
	host *provider.HostClient
}

var keep = plugin.MarshalOptions{KeepUnknowns: true, KeepSecrets: true, SkipNulls: true}
var plain = plugin.MarshalOptions{KeepUnknowns: true, SkipNulls: true}

func (p *prov) GetPluginInfo(context.Context, *emptypb.Empty) (*pulumirpc.PluginInfo, error) {
	return &pulumirpc.PluginInfo{Version: Version}, nil
}

func (p *prov) CheckConfig(_ context.Context, req *pulumirpc.CheckRequest) (*pulumirpc.CheckResponse, error) {
	return &pulumirpc.CheckResponse{Inputs: req.GetNews()}, nil
}

func (p *prov) DiffConfig(context.Context, *pulumirpc.DiffRequest) (*pulumirpc.DiffResponse, error) {
	return &pulumirpc.DiffResponse{Changes: pulumirpc.DiffResponse_DIFF_NONE}, nil
}

func (p *prov) Configure(context.Context, *pulumirpc.ConfigureRequest) (*pulumirpc.ConfigureResponse, error) {
	return &pulumirpc.ConfigureResponse{AcceptSecrets: true, SupportsPreview: true}, nil
}

func (p *prov) Check(_ context.Context, req *pulumirpc.CheckRequest) (*pulumirpc.CheckResponse, error) {
	if req.GetType() != "" && req.GetType() != commandType {
		return nil, fmt.Errorf("unsupported resource type %s (this stand-in implements %s)", req.GetType(), commandType)
	}
	return &pulumirpc.CheckResponse{Inputs: req.GetNews()}, nil
}

func (p *prov) Diff(_ context.Context, req *pulumirpc.DiffRequest) (*pulumirpc.DiffResponse, error) {
	oldStruct := req.GetOldInputs()
	if oldStruct == nil {
		oldStruct = req.GetOlds()
	}
	olds, err := plugin.UnmarshalProperties(oldStruct, keep)
	if err != nil {
		return nil, err
	}
	news, err := plugin.UnmarshalProperties(req.GetNews(), keep)
	if err != nil {
		return nil, err
	}
	resp := &pulumirpc.DiffResponse{Changes: pulumirpc.DiffResponse_DIFF_NONE, HasDetailedDiff: true, DetailedDiff: map[string]*pulumirpc.PropertyDiff{}}
	for _, k := range inputKeys {
		key := resource.PropertyKey(k)
		o, hasOld := olds[key]
		n, hasNew := news[key]
		if !hasOld && !hasNew {
			continue
		}
		if hasOld && hasNew && !n.ContainsUnknowns() && o.DeepEquals(n) {
			continue
		}
		kind := pulumirpc.PropertyDiff_UPDATE
		switch {
		case !hasOld:
			kind = pulumirpc.PropertyDiff_ADD
		case !hasNew:
			kind = pulumirpc.PropertyDiff_DELETE
		}
		if k == "triggers" {
			kind += 1 // the *_REPLACE variant of ADD, DELETE, UPDATE
			resp.Replaces = append(resp.Replaces, k)
		}
		resp.Changes = pulumirpc.DiffResponse_DIFF_SOME
		resp.Diffs = append(resp.Diffs, k)
		resp.DetailedDiff[k] = &pulumirpc.PropertyDiff{Kind: kind, InputDiff: true}
	}
	return resp, nil
}

func str(m resource.PropertyMap, k string) string {
	v, ok := m[resource.PropertyKey(k)]
	if !ok {
		return ""
	}
	if v.IsSecret() {
		v = v.SecretValue().Element
	}
	if v.IsString() {
		return v.StringValue()
	}
	return ""
}

type runSpec struct {
	urn     resource.URN
	command string
	props   resource.PropertyMap
	extra   []string
}

// run executes a command the way the command provider does: interpreter (default /bin/sh -c),
// dir, environment on top of ours, stdin; stderr is streamed to the engine as it comes.
func (p *prov) run(ctx context.Context, s runSpec) (string, string, error) {
	interp := []string{"/bin/sh", "-c"}
	if v, ok := s.props["interpreter"]; ok && v.IsArray() && len(v.ArrayValue()) > 0 {
		interp = nil
		for _, e := range v.ArrayValue() {
			interp = append(interp, e.StringValue())
		}
	}
	cmd := exec.CommandContext(ctx, interp[0], append(interp[1:], s.command)...)
	cmd.Dir = str(s.props, "dir")
	cmd.Env = os.Environ()
	if v, ok := s.props["environment"]; ok && v.IsObject() {
		env := v.ObjectValue()
		keys := env.StableKeys()
		for _, k := range keys {
			cmd.Env = append(cmd.Env, fmt.Sprintf("%s=%s", k, str(env, string(k))))
		}
	}
	cmd.Env = append(cmd.Env, s.extra...)
	if in := str(s.props, "stdin"); in != "" {
		cmd.Stdin = strings.NewReader(in)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	pr, pw := io.Pipe()
	cmd.Stderr = io.MultiWriter(&stderr, pw)
	var wg sync.WaitGroup
	wg.Add(1)
	logging := str(s.props, "logging")
	go func() {
		defer wg.Done()
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64*1024), 1024*1024)
		for sc.Scan() {
			if p.host != nil && logging != "none" && logging != "stdout" {
				_ = p.host.Log(ctx, diag.Info, s.urn, sc.Text())
			}
		}
	}()
	err := cmd.Run()
	pw.Close()
	wg.Wait()
	out := strings.TrimSuffix(stdout.String(), "\n")
	errOut := strings.TrimSuffix(stderr.String(), "\n")
	if err != nil {
		lines := strings.Split(errOut, "\n")
		if len(lines) > 5 {
			lines = lines[len(lines)-5:]
		}
		return out, errOut, fmt.Errorf("%v: running %q:\n%s", err, s.command, strings.Join(lines, "\n"))
	}
	return out, errOut, nil
}

func outputs(inputs resource.PropertyMap, stdout, stderr string, preview bool) resource.PropertyMap {
	res := inputs.Copy()
	if preview {
		res["stdout"] = resource.MakeComputed(resource.NewStringProperty(""))
		res["stderr"] = resource.MakeComputed(resource.NewStringProperty(""))
	} else {
		res["stdout"] = resource.NewStringProperty(stdout)
		res["stderr"] = resource.NewStringProperty(stderr)
	}
	return res
}

func (p *prov) Create(ctx context.Context, req *pulumirpc.CreateRequest) (*pulumirpc.CreateResponse, error) {
	props, err := plugin.UnmarshalProperties(req.GetProperties(), plain)
	if err != nil {
		return nil, err
	}
	id := make([]byte, 8)
	_, _ = rand.Read(id)
	var stdout, stderr string
	if !req.GetPreview() {
		if c := str(props, "create"); c != "" {
			if stdout, stderr, err = p.run(ctx, runSpec{urn: resource.URN(req.GetUrn()), command: c, props: props}); err != nil {
				return nil, err
			}
		}
	}
	st, err := plugin.MarshalProperties(outputs(props, stdout, stderr, req.GetPreview()), plain)
	if err != nil {
		return nil, err
	}
	return &pulumirpc.CreateResponse{Id: hex.EncodeToString(id), Properties: st}, nil
}

func previous(olds resource.PropertyMap, props resource.PropertyMap) []string {
	if v, ok := props["addPreviousOutputInEnv"]; ok && v.IsBool() && !v.BoolValue() {
		return nil
	}
	return []string{"PULUMI_COMMAND_STDOUT=" + str(olds, "stdout"), "PULUMI_COMMAND_STDERR=" + str(olds, "stderr")}
}

func (p *prov) Update(ctx context.Context, req *pulumirpc.UpdateRequest) (*pulumirpc.UpdateResponse, error) {
	olds, err := plugin.UnmarshalProperties(req.GetOlds(), plain)
	if err != nil {
		return nil, err
	}
	props, err := plugin.UnmarshalProperties(req.GetNews(), plain)
	if err != nil {
		return nil, err
	}
	var stdout, stderr string
	if !req.GetPreview() {
		c := str(props, "update")
		if c == "" {
			c = str(props, "create")
		}
		if c != "" {
			if stdout, stderr, err = p.run(ctx, runSpec{urn: resource.URN(req.GetUrn()), command: c, props: props, extra: previous(olds, props)}); err != nil {
				return nil, err
			}
		}
	}
	st, err := plugin.MarshalProperties(outputs(props, stdout, stderr, req.GetPreview()), plain)
	if err != nil {
		return nil, err
	}
	return &pulumirpc.UpdateResponse{Properties: st}, nil
}

func (p *prov) Delete(ctx context.Context, req *pulumirpc.DeleteRequest) (*emptypb.Empty, error) {
	props, err := plugin.UnmarshalProperties(req.GetProperties(), plain)
	if err != nil {
		return nil, err
	}
	if c := str(props, "delete"); c != "" {
		if _, _, err := p.run(ctx, runSpec{urn: resource.URN(req.GetUrn()), command: c, props: props, extra: previous(props, props)}); err != nil {
			return nil, err
		}
	}
	return &emptypb.Empty{}, nil
}

func (p *prov) Read(_ context.Context, req *pulumirpc.ReadRequest) (*pulumirpc.ReadResponse, error) {
	return &pulumirpc.ReadResponse{Id: req.GetId(), Properties: req.GetProperties(), Inputs: req.GetInputs()}, nil
}

func (p *prov) Invoke(ctx context.Context, req *pulumirpc.InvokeRequest) (*pulumirpc.InvokeResponse, error) {
	if req.GetTok() != "command:local:run" {
		return nil, fmt.Errorf("unsupported function %s (this stand-in implements command:local:run)", req.GetTok())
	}
	args, err := plugin.UnmarshalProperties(req.GetArgs(), plain)
	if err != nil {
		return nil, err
	}
	stdout, stderr, err := p.run(ctx, runSpec{command: str(args, "command"), props: args})
	if err != nil {
		return nil, err
	}
	ret, err := plugin.MarshalProperties(outputs(args, stdout, stderr, false), plain)
	if err != nil {
		return nil, err
	}
	return &pulumirpc.InvokeResponse{Return: ret}, nil
}

func (p *prov) Cancel(context.Context, *emptypb.Empty) (*emptypb.Empty, error) {
	return &emptypb.Empty{}, nil
}

func main() {
	if err := provider.Main("command", func(host *provider.HostClient) (pulumirpc.ResourceProviderServer, error) {
		return &prov{host: host}, nil
	}); err != nil {
		fmt.Fprintf(os.Stderr, "pulumi-resource-command: %v\n", err)
		os.Exit(1)
	}
}
