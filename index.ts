// The Pulumi program: reads the stack's config, declares one SupplyChain, exports its outputs.
// (Components land with the Pulumi DSL issue.)
export {};
