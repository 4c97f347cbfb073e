package deploy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	kjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// overlays are the kustomizations a user applies.
var overlays = []string{"overlays/single-cluster", "overlays/hub", "overlays/edge"}

// object is one decoded manifest: its typed form when client-go's scheme
// knows the kind, and always its unstructured form.
type object struct {
	typed runtime.Object // nil for custom resources
	u     *unstructured.Unstructured
	where string // file or overlay it came from, for messages
}

func (o object) String() string {
	return fmt.Sprintf("%s %s/%s (%s)", o.u.GetKind(), o.u.GetNamespace(), o.u.GetName(), o.where)
}

// strictCodec rejects unknown and duplicate fields, as `kubectl apply
// --validate=strict` does.
var strictCodec = kjson.NewSerializerWithOptions(kjson.DefaultMetaFactory, scheme.Scheme, scheme.Scheme,
	kjson.SerializerOptions{Yaml: true, Strict: true})

// customKinds are the custom resources the manifests use, checked by
// checkCustom since client-go has no types for them.
var customKinds = map[schema.GroupVersionKind]bool{
	{Group: "keda.sh", Version: "v1alpha1", Kind: "ScaledObject"}:           true,
	{Group: "monitoring.coreos.com", Version: "v1", Kind: "PodMonitor"}:     true,
	{Group: "monitoring.coreos.com", Version: "v1", Kind: "PrometheusRule"}: true,
	{Group: "monitoring.coreos.com", Version: "v1", Kind: "ServiceMonitor"}: true,
	{Group: "keda.sh", Version: "v1alpha1", Kind: "TriggerAuthentication"}:  true,
}

// decodeDocs splits a multi-document YAML stream and decodes every
// document: strictly into its Go type for built-in kinds, as unstructured
// and then checked field by field for the custom ones.
func decodeDocs(data []byte, where string) ([]object, error) {
	var objs []object
	var errs []error
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for i := 0; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", where, i, err)
		}
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			continue
		}
		o, err := decodeDoc(doc, fmt.Sprintf("%s#%d", where, i))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		objs = append(objs, o)
	}
	return objs, errors.Join(errs...)
}

func decodeDoc(doc []byte, where string) (object, error) {
	u := &unstructured.Unstructured{}
	j, err := yaml.YAMLToJSON(doc)
	if err != nil {
		return object{}, fmt.Errorf("%s: %w", where, err)
	}
	if err := u.UnmarshalJSON(j); err != nil {
		return object{}, fmt.Errorf("%s: %w", where, err)
	}
	gvk := u.GroupVersionKind()
	o := object{u: u, where: where}
	if scheme.Scheme.Recognizes(gvk) {
		typed, _, err := strictCodec.Decode(doc, nil, nil)
		if err != nil {
			return object{}, fmt.Errorf("%s: %s %s: %w", where, gvk.Kind, u.GetName(), err)
		}
		o.typed = typed
		return o, nil
	}
	if !customKinds[gvk] {
		return object{}, fmt.Errorf("%s: %s %q: kind unknown to client-go's scheme and to the checks of custom resources", where, gvk, u.GetName())
	}
	if err := checkCustom(u); err != nil {
		return object{}, fmt.Errorf("%s: %s %s: %w", where, gvk.Kind, u.GetName(), err)
	}
	return o, nil
}

func stripComments(doc []byte) []byte {
	var out []byte
	for line := range bytes.Lines(doc) {
		if t := bytes.TrimSpace(line); len(t) > 0 && t[0] != '#' {
			out = append(out, line...)
		}
	}
	return out
}

// build runs kustomize on dir (relative to deploy/) as `kubectl apply -k`
// would, and decodes its output.
func build(t *testing.T, dir string) []object {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	rm, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	out, err := rm.AsYaml()
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	objs, err := decodeDocs(out, "build "+dir)
	if err != nil {
		t.Fatalf("output of %s: %v", dir, err)
	}
	return objs
}

// kustomization is what the tests read of a kustomization.yaml.
type kustomization struct {
	Kind      string   `json:"kind"`
	Resources []string `json:"resources"`
	Patches   []struct {
		Path string `json:"path"`
	} `json:"patches"`
	ConfigMapGenerator []struct {
		Name  string   `json:"name"`
		Files []string `json:"files"`
	} `json:"configMapGenerator"`
	Components []string `json:"components"`
}

// manifestFiles lists every file a kustomization under deploy/ names as a
// resource or patch, so that each can be decoded on its own too.
func manifestFiles(t *testing.T) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(".", func(path string, d os.DirEntry, err error) error {
		if err != nil || d.Name() != "kustomization.yaml" {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		var k kustomization
		if err := yaml.Unmarshal(data, &k); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		dir := filepath.Dir(path)
		names := slices.Clone(k.Resources)
		for _, p := range k.Patches {
			names = append(names, p.Path)
		}
		for _, n := range names {
			p := filepath.Join(dir, n)
			if fi, err := os.Stat(p); err != nil {
				return fmt.Errorf("%s: resource %s: %w", path, n, err)
			} else if !fi.IsDir() {
				files = append(files, p)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 10 {
		t.Fatalf("found only %d manifest files under deploy/: %v", len(files), files)
	}
	return files
}
