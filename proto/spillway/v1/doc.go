// Package spillwayv1 is the generated Go code of the spillway.v1 API: SyncService between the
// hub and its spokes, and AdminService for hubctl. The .proto files beside it are the source;
// `make generate` rewrites the .pb.go files and `make verify` proves they are current.
package spillwayv1
