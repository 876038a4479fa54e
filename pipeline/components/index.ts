export * from "./config";
export * from "./build";
export * from "./closure";
export * from "./rebuild";
export * from "./verify";
export * from "./boot-test";
export * from "./supply-chain";
