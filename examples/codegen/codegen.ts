import type { CodegenConfig } from "@graphql-codegen/cli";
const config: CodegenConfig = {
  schema: "../../schema.graphql",  // this repository's schema
  documents: ["src/**/*.ts", "!src/gql/**/*"],
  generates: {
    "./src/gql/": {
      preset: "client",
      presetConfig: { persistedDocuments: { hashAlgorithm: "sha256" } },
    },
  },
};
export default config;
