// JSON Web Tokens for `islet serve`: an `authorize` that takes the token from
// `Authorization: Bearer <token>` or, for browsers (which cannot set headers
// on a WebSocket), from the `access_token` query parameter, and checks it
// with jose: the signature (HS256 with a shared secret, or RS256/ES256 with a
// public key), `exp` and `nbf`, and the issuer and audience when asked. The
// verified claims are the session's `user`. An endpoint whose descriptor
// says `"public": true` needs no token.
import { createPublicKey, createSecretKey, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { IncomingMessage } from 'node:http';
import { jwtVerify } from 'jose';
import { IsletError } from '../bridge/errors.js';
import { type Authorize, MAX_USER_BYTES, type SessionUser, type Verdict } from './authorize.js';

export interface JwtOptions {
  /** A file holding the HS256 secret (trailing whitespace is not part of it). */
  secretFile?: string;
  /** A PEM file holding the RS256 or ES256 public key. */
  publicKeyFile?: string;
  issuer?: string;
  audience?: string;
}

/** The signing algorithm a public key's type calls for. */
const KEY_ALGORITHMS: Record<string, string> = { rsa: 'RS256', 'rsa-pss': 'PS256', ec: 'ES256', ed25519: 'EdDSA' };

function readKey(options: JwtOptions): { key: KeyObject; algorithm: string } {
  if ((options.secretFile === undefined) === (options.publicKeyFile === undefined)) {
    throw new IsletError('ISLET_ERR_BAD_OPTION', 'give one of --jwt-secret-file and --jwt-public-key-file');
  }
  const file = (options.secretFile ?? options.publicKeyFile)!;
  let text: Buffer;
  try {
    text = readFileSync(file);
  } catch (error) {
    throw new IsletError('ISLET_ERR_BAD_OPTION', `cannot read the JWT key file ${file}: ${(error as Error).message}`);
  }
  if (options.secretFile !== undefined) {
    const secret = Buffer.from(text.toString('utf8').trimEnd());
    if (secret.length < 32) throw new IsletError('ISLET_ERR_BAD_OPTION', `the JWT secret in ${file} is ${secret.length} bytes; HS256 needs at least 32`);
    return { key: createSecretKey(secret), algorithm: 'HS256' };
  }
  let key: KeyObject;
  try {
    key = createPublicKey(text);
  } catch (error) {
    throw new IsletError('ISLET_ERR_BAD_OPTION', `${file} is not a PEM public key: ${(error as Error).message}`);
  }
  const algorithm = KEY_ALGORITHMS[key.asymmetricKeyType ?? ''];
  if (algorithm === undefined) throw new IsletError('ISLET_ERR_BAD_OPTION', `${file} holds a ${key.asymmetricKeyType} key; islet verifies RS256 (RSA) and ES256 (EC P-256) tokens`);
  return { key, algorithm };
}

/** The token of an upgrade request, or null. */
function tokenOf(req: IncomingMessage): string | null {
  const header = req.headers.authorization;
  if (typeof header === 'string') {
    const bearer = /^Bearer\s+(\S+)\s*$/i.exec(header);
    if (bearer !== null) return bearer[1]!;
  }
  try {
    return new URL(req.url ?? '/', 'http://host').searchParams.get('access_token');
  } catch {
    return null;
  }
}

/** Why jose refused a token, in words a client can act on. */
function reasonOf(error: unknown, algorithm: string): string {
  const { code, claim } = error as { code?: string; claim?: string };
  switch (code) {
    case 'ERR_JWT_EXPIRED':
      return 'token expired';
    case 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED':
      return 'token signature does not verify';
    case 'ERR_JWT_CLAIM_VALIDATION_FAILED':
      if (claim === 'nbf') return 'token not valid yet (nbf)';
      if (claim === 'exp') return 'token has no valid exp';
      if (claim === 'aud') return 'token audience does not match';
      if (claim === 'iss') return 'token issuer does not match';
      return `token claim "${String(claim)}" is not valid`;
    case 'ERR_JOSE_ALG_NOT_ALLOWED':
      return `token algorithm not allowed (this server takes ${algorithm})`;
    case 'ERR_JWS_INVALID':
    case 'ERR_JWT_INVALID':
      return 'malformed token';
    default:
      return 'token refused';
  }
}

/** An `authorize` that checks JWTs as configured; throws ISLET_ERR_BAD_OPTION on a key it cannot use. */
export function jwtAuthorizer(options: JwtOptions): Authorize {
  const { key, algorithm } = readKey(options);
  // A token without exp would never expire: it is refused.
  const verify = { algorithms: [algorithm], issuer: options.issuer, audience: options.audience, requiredClaims: ['exp'] };
  return async (req, endpoint): Promise<Verdict> => {
    if (endpoint.public) return true;
    const token = tokenOf(req);
    if (token === null || token === '') {
      return { status: 401, reason: 'no token: send "Authorization: Bearer <token>", or ?access_token=<token> from a browser' };
    }
    let claims: Record<string, unknown>;
    try {
      claims = (await jwtVerify(token, key, verify)).payload;
    } catch (error) {
      return { status: 401, reason: reasonOf(error, algorithm) };
    }
    let json: string;
    try {
      json = JSON.stringify(claims);
    } catch {
      return { status: 401, reason: 'token claims cannot be read (nested too deep)' };
    }
    if (Buffer.byteLength(json) > MAX_USER_BYTES) return { status: 401, reason: `token claims are over ${MAX_USER_BYTES} bytes` };
    return { user: claims as SessionUser };
  };
}
