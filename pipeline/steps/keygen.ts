// `supply-chain keygen`: the Ed25519 key pair attest signs with. The private key is created mode 0600
// and never replaces an existing one (a lost key would orphan every attestation it signed).
import * as fs from "node:fs";
import * as path from "node:path";
import { generateKeyPair } from "../lib/dsse";
import { writeFileExclusive } from "../lib/files";
import { InputError, log, StepDefinition } from "../lib/step";

export interface KeygenResult {
  privateKey: string;
  publicKey: string;
  keyid: string;
}

export const step: StepDefinition<KeygenResult> = {
  name: "keygen",
  summary: "create an Ed25519 signing key pair for attest: DIR/signing.key (PKCS#8 PEM, 0600) and DIR/signing.pub (SPKI PEM)",
  options: {
    out: { type: "string", description: "directory for signing.key and signing.pub", required: true },
  },
  async run({ values }) {
    const dir = path.resolve(values.out);
    if (fs.existsSync(dir) && !fs.statSync(dir).isDirectory()) throw new InputError(`--out ${dir} exists and is not a directory`);
    const privateKey = path.join(dir, "signing.key");
    const publicKey = path.join(dir, "signing.pub");
    for (const f of [privateKey, publicKey]) {
      if (fs.existsSync(f)) throw new InputError(`${f} already exists: keygen never overwrites a key (remove it or choose another --out)`);
    }
    const pair = generateKeyPair();
    try {
      writeFileExclusive(privateKey, pair.privatePem, 0o600);
      writeFileExclusive(publicKey, pair.publicPem, 0o644);
    } catch (e: any) {
      if (e.code === "EEXIST") throw new InputError(`${e.dest ?? dir} appeared while keygen ran: keygen never overwrites a key`);
      throw e;
    }
    log("keygen", `wrote ${privateKey} (0600) and ${publicKey}, keyid ${pair.keyid}`);
    return { privateKey, publicKey, keyid: pair.keyid };
  },
};
