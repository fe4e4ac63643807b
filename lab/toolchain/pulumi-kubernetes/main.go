// Command pulumi-resource-kubernetes: the Kubernetes provider plugin, built offline.
//
// The provider module's own main embeds two generated files that its module zip lacks, so the
// lab builds this copy instead: 30-pulumi.sh writes schema-embed.json (the module's schema.json
// with its version field set) and terraform-mapping-embed.json (the mapping, compacted) beside it.
package main

import (
	_ "embed"

	"github.com/pulumi/pulumi-kubernetes/provider/v4/pkg/provider"
	"github.com/pulumi/pulumi-kubernetes/provider/v4/pkg/version"
)

//go:embed schema-embed.json
var schema []byte

//go:embed terraform-mapping-embed.json
var terraformMapping []byte

func main() {
	provider.Serve("kubernetes", version.Version, schema, terraformMapping)
}
