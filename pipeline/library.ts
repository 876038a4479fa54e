// The package's library entry (`import { SupplyChain } from "secure-supply-chain"`): the components a
// user's own Pulumi program declares chains with, their typed args, and the stack config parser.
// Compiled to dist/ by `npm run build:lib` (npm pack runs it): docs/dsl.md.
export { SupplyChain } from "./components/supply-chain";
export type { SupplyChainArgs } from "./components/supply-chain";
export { chainConfig, ConfigError, parseConfig, PROJECT } from "./components/config";
export type { AuditConfig, ChainArgs, StackConfig, SupplyChainConfig } from "./components/config";
export { Build } from "./components/build";
export { Closure } from "./components/closure";
export { Rebuild } from "./components/rebuild";
export { Verify } from "./components/verify";
export { BootTest } from "./components/boot-test";
export { Attest } from "./components/attest";
export { Audit } from "./components/audit";
export type { BuildArgs } from "./components/build";
export type { ClosureArgs } from "./components/closure";
export type { RebuildArgs } from "./components/rebuild";
export type { VerifyArgs } from "./components/verify";
export type { BootTestArgs } from "./components/boot-test";
export type { AttestArgs } from "./components/attest";
export type { TargetArgs } from "./components/step-command";
