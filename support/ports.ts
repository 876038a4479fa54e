// The same free-port finder the boot-test step uses for its QEMU forwards.
export { freeHostPort as freePort } from "../pipeline/lib/ports";
