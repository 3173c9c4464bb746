package httpapi

import (
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/gpumarket/gpumarket/internal/market"
)

// OpenAPI returns the OpenAPI 3.1 description of the API, built from the
// route table and the Go types of the bodies, so it cannot drift from what
// the server does.
func OpenAPI() map[string]any {
	schemas := map[string]any{}
	paths := map[string]map[string]any{}
	pathParam := regexp.MustCompile(`\{(\w+)\}`)
	errResp := map[string]any{"description": "error", "content": map[string]any{"application/json": map[string]any{"schema": schemaOf(reflect.TypeFor[ErrorBody](), schemas)}}}
	for _, r := range routes {
		op := map[string]any{
			"summary":     r.Summary,
			"operationId": strings.ToLower(r.Method) + strings.ReplaceAll(strings.ReplaceAll(strings.ReplaceAll(r.Path, "/", "_"), "{", ""), "}", ""),
		}
		if r.Auth {
			op["security"] = []any{map[string]any{"apiKey": []string{}}}
		}
		var params []any
		for _, m := range pathParam.FindAllStringSubmatch(r.Path, -1) {
			params = append(params, map[string]any{"name": m[1], "in": "path", "required": true, "schema": map[string]any{"type": "string"}})
		}
		for _, q := range r.Query {
			params = append(params, map[string]any{"name": q.Name, "in": "query", "description": q.Doc, "schema": map[string]any{"type": q.Type}})
		}
		if r.Idem {
			params = append(params, map[string]any{"name": "Idempotency-Key", "in": "header", "required": true, "schema": map[string]any{"type": "string"}})
		}
		if params != nil {
			op["parameters"] = params
		}
		if r.Req != nil {
			op["requestBody"] = map[string]any{"required": true, "content": map[string]any{"application/json": map[string]any{"schema": schemaOf(reflect.TypeOf(r.Req), schemas)}}}
		}
		code := r.Status
		if code == 0 {
			code = 200
		}
		ok := map[string]any{"description": "success"}
		if r.Resp != nil {
			ok["content"] = map[string]any{"application/json": map[string]any{"schema": schemaOf(reflect.TypeOf(r.Resp), schemas)}}
		}
		op["responses"] = map[string]any{strconv.Itoa(code): ok, "default": errResp}
		if paths[r.Path] == nil {
			paths[r.Path] = map[string]any{}
		}
		paths[r.Path][strings.ToLower(r.Method)] = op
	}
	return map[string]any{
		"openapi": "3.1.0",
		"info": map[string]any{
			"title":       "gpumarket",
			"version":     "1",
			"description": "Open GPU compute marketplace. Money is a decimal string of tokens with up to 6 decimals. Errors are {\"error\":{\"code\",\"message\"}}.",
		},
		"paths": paths,
		"components": map[string]any{
			"schemas":         schemas,
			"securitySchemes": map[string]any{"apiKey": map[string]any{"type": "http", "scheme": "bearer", "description": "an API key from POST /api/v1/login or /api/v1/keys"}},
		},
	}
}

func ref(name string) map[string]any {
	return map[string]any{"$ref": "#/components/schemas/" + name}
}

var (
	timeType  = reflect.TypeFor[time.Time]()
	moneyType = reflect.TypeFor[market.Money]()
)

// schemaOf returns the JSON schema of t; named structs go into schemas and
// are referenced. For a named struct it returns a $ref object, else the
// inline schema.
func schemaOf(t reflect.Type, schemas map[string]any) map[string]any {
	switch {
	case t == timeType:
		return map[string]any{"type": "string", "format": "date-time"}
	case t == moneyType:
		return map[string]any{"type": "string", "pattern": `^-?[0-9]+(\.[0-9]{1,6})?$`, "description": "tokens"}
	case t == reflect.TypeFor[market.Duration]():
		return map[string]any{"type": "string", "description": "a duration like 80ms or 5m"}
	}
	switch t.Kind() {
	case reflect.Pointer:
		return schemaOf(t.Elem(), schemas)
	case reflect.String:
		return map[string]any{"type": "string"}
	case reflect.Bool:
		return map[string]any{"type": "boolean"}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return map[string]any{"type": "integer"}
	case reflect.Float32, reflect.Float64:
		return map[string]any{"type": "number"}
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 {
			return map[string]any{"type": "string", "contentEncoding": "base64"}
		}
		return map[string]any{"type": "array", "items": schemaOf(t.Elem(), schemas)}
	case reflect.Map:
		return map[string]any{"type": "object", "additionalProperties": schemaOf(t.Elem(), schemas)}
	case reflect.Struct:
		name := t.Name()
		if name != "" {
			if _, done := schemas[name]; !done {
				schemas[name] = map[string]any{} // breaks cycles
				schemas[name] = structSchema(t, schemas)
			}
			return ref(name)
		}
		return structSchema(t, schemas)
	}
	return map[string]any{}
}

func structSchema(t reflect.Type, schemas map[string]any) map[string]any {
	props := map[string]any{}
	var addFields func(t reflect.Type)
	addFields = func(t reflect.Type) {
		for f := range t.Fields() {
			tag := f.Tag.Get("json")
			if tag == "-" || !f.IsExported() {
				continue
			}
			name, _, _ := strings.Cut(tag, ",")
			if f.Anonymous && name == "" {
				addFields(f.Type)
				continue
			}
			if name == "" {
				name = f.Name
			}
			props[name] = schemaOf(f.Type, schemas)
		}
	}
	addFields(t)
	return map[string]any{"type": "object", "properties": props}
}
