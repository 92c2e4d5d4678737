package stack

import (
	"context"
	"fmt"

	"github.com/moby/moby/client"
	"github.com/testcontainers/testcontainers-go"
)

// Kill sends SIGKILL to one container: the process dies at once, with no
// graceful shutdown (no drained queue, no closed connection). Its state is
// kept; StartService brings it back.
func (s *Stack) Kill(ctx context.Context, name string) error {
	return s.docker(ctx, name, func(cli *testcontainers.DockerClient, id string) error {
		_, err := cli.ContainerKill(ctx, id, client.ContainerKillOptions{Signal: "KILL"})
		return err
	})
}

// Pause freezes every process of one container (the cgroup freezer): its
// connections stay open and nothing answers, as on a network partition
// that drops packets instead of refusing them. Unpause resumes it.
func (s *Stack) Pause(ctx context.Context, name string) error {
	return s.docker(ctx, name, func(cli *testcontainers.DockerClient, id string) error {
		_, err := cli.ContainerPause(ctx, id, client.ContainerPauseOptions{})
		return err
	})
}

// Unpause resumes a container frozen by Pause.
func (s *Stack) Unpause(ctx context.Context, name string) error {
	return s.docker(ctx, name, func(cli *testcontainers.DockerClient, id string) error {
		_, err := cli.ContainerUnpause(ctx, id, client.ContainerUnpauseOptions{})
		return err
	})
}

// docker runs op on the Docker engine for one of the stack's containers.
func (s *Stack) docker(ctx context.Context, name string, op func(*testcontainers.DockerClient, string) error) error {
	c, err := s.container(name)
	if err != nil {
		return err
	}
	cli, err := testcontainers.NewDockerClientWithOpts(ctx)
	if err != nil {
		return fmt.Errorf("%s: docker client: %w", name, err)
	}
	defer cli.Close() //nolint:errcheck // nothing to do about a failed close of a local client
	if err := op(cli, c.GetContainerID()); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}
