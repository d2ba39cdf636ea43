import { graphql } from "./gql";

export const Me = graphql(`
  query Me {
    me { id email displayName }
  }
`);

export const Events = graphql(`
  subscription FamilyEvents($since: String) {
    familyEvents(since: $since) { seq kind }
  }
`);
