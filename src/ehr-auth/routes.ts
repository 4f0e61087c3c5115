/**
 * GET /.well-known/jwks.json: the gateway's public keys, without a credential (an EHR fetches it to verify the
 * gateway's client assertions; Epic asks for this URL at registration). Public parts only: kty, n/e or crv/x/y, kid,
 * alg, use. Cached by clients for five minutes, so that a key added for a rotation is seen soon.
 */
import express, { type Router } from 'express';
import type { JWK } from 'jose';

export const JWKS_PATH = '/.well-known/jwks.json';

export function jwksRoutes(jwks: { keys: JWK[] }): Router {
  const body = JSON.stringify({
    keys: jwks.keys.map(({ kty, n, e, crv, x, y, kid, alg, use }) => ({ kty, n, e, crv, x, y, kid, alg, use })),
  });
  const router = express.Router();
  router.get(JWKS_PATH, (_req, res) => {
    res.setHeader('Cache-Control', 'public, max-age=300');
    res.type('application/json').send(body);
  });
  return router;
}
