package hubtest

import (
	"context"

	pb "github.com/spillway-io/spillway/proto/spillway/v1"
)

// The admin lists come a page at a time; these read every page.

// AllImports lists every import of the hub behind admin.
func AllImports(ctx context.Context, admin pb.AdminServiceClient) ([]*pb.Import, error) {
	return allPages(func(token string) ([]*pb.Import, string, error) {
		resp, err := admin.ListImports(ctx, &pb.ListImportsRequest{PageToken: token})
		return resp.GetImports(), resp.GetNextPageToken(), err
	})
}

// AllPools lists every exported pool of the hub behind admin.
func AllPools(ctx context.Context, admin pb.AdminServiceClient) ([]*pb.Pool, error) {
	return allPages(func(token string) ([]*pb.Pool, string, error) {
		resp, err := admin.ListPools(ctx, &pb.ListPoolsRequest{PageToken: token})
		return resp.GetPools(), resp.GetNextPageToken(), err
	})
}

// AllClusters lists every registered cluster of the hub behind admin.
func AllClusters(ctx context.Context, admin pb.AdminServiceClient) ([]*pb.Cluster, error) {
	return allPages(func(token string) ([]*pb.Cluster, string, error) {
		resp, err := admin.ListClusters(ctx, &pb.ListClustersRequest{PageToken: token})
		return resp.GetClusters(), resp.GetNextPageToken(), err
	})
}

func allPages[T any](page func(token string) ([]T, string, error)) ([]T, error) {
	var out []T
	token := ""
	for {
		items, next, err := page(token)
		if err != nil {
			return nil, err
		}
		out = append(out, items...)
		if next == "" {
			return out, nil
		}
		token = next
	}
}
